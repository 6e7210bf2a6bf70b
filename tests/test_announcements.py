"""Announcements (`flask --app app announce`) reach exactly the users with their topic on, once;
their unsubscribe link (List-Unsubscribe, RFC 8058 one-click) turns the topic off without a
login, and a forged one changes nothing."""
import json
from urllib.parse import urlsplit

import pytest
from bs4 import BeautifulSoup
from itsdangerous import URLSafeSerializer

import announcements
import database
import mail
import models
from tests.helpers import every_row, html, log_in, make_user

BODY = 'Penstock now speaks PostgreSQL 18.\nUpgrade when you like.\n\nThanks for reading <3'


@pytest.fixture
def people(app):
    """Three users, three preference sets (product_updates is on for a new account)."""
    users = {'alice': ('community_updates',), 'bob': ('product_updates', 'tips_and_tricks'),
             'carol': ()}
    made = {}
    for handle, on in users.items():
        made[handle] = make_user(f'{handle}@example.com', handle)
        with database.db.connection_context():
            models.Preferences.change(made[handle], {name: name in on
                                                     for name in announcements.TOPICS})
    return made


def announce(app, topic, *extra, subject='News', body=BODY, tmp_path):
    path = tmp_path / 'body.txt'
    path.write_bytes(body if isinstance(body, bytes) else body.encode())
    return app.test_cli_runner().invoke(args=['announce', '--topic', topic, '--subject',
                                              subject, '--body-file', str(path), *extra])


def queued():
    """{(announcement id, recipient address)} of every announcement message."""
    with database.db.connection_context():
        return {(email.announcement_id, email.to_address) for email in
                mail.Email.select().where(mail.Email.kind == 'announcement')}


def message_to(address):
    with database.db.connection_context():
        return mail.Email.get(mail.Email.to_address == address)


def topics_of(user):
    with database.db.connection_context():
        preferences = models.Preferences.for_user(user.id)
    return {name for name in announcements.TOPICS if getattr(preferences, name)}


def unsubscribe_path(email):
    with database.db.connection_context():
        header = announcements.headers(email)['List-Unsubscribe']
    assert header.startswith('<') and header.endswith('>')
    url = urlsplit(header[1:-1])
    assert f'{url.scheme}://{url.netloc}' == mail.Config.public_url
    return url.path


def test_each_topic_reaches_exactly_the_users_who_have_it_on(app, people, tmp_path):
    expected = {'community_updates': {'alice@example.com'},
                'product_updates': {'bob@example.com'},
                'tips_and_tricks': {'bob@example.com'}}
    for topic, addresses in expected.items():
        before = queued()
        result = announce(app, topic, tmp_path=tmp_path)
        assert result.exit_code == 0, result.output
        assert result.output == f'Queued {len(addresses)} message.\n'
        new = queued() - before
        assert {address for _, address in new} == addresses
        with database.db.connection_context():
            announcement = announcements.Announcement.get_by_id(next(iter(new))[0])
        assert (announcement.topic, announcement.subject, announcement.body,
                announcement.queued) == (topic, 'News', BODY.strip(), len(addresses))
    with database.db.connection_context():
        rows = list(mail.Email.select())
    assert {(row.user_id, row.status, row.attempts) for row in rows} == {
        (people['alice'].id, 'pending', 0), (people['bob'].id, 'pending', 0)}
    assert len({row.message_id for row in rows}) == 3


def test_a_second_run_queues_nothing_but_reaches_who_turned_the_topic_on_since(
        app, people, tmp_path):
    assert announce(app, 'product_updates', tmp_path=tmp_path).output == 'Queued 1 message.\n'
    first = queued()
    again = announce(app, 'product_updates', tmp_path=tmp_path)
    assert again.exit_code == 0 and again.output == 'Queued 0 messages.\n'
    assert queued() == first
    with database.db.connection_context():
        models.Preferences.change(people['carol'], {'product_updates': True})
    assert announce(app, 'product_updates', tmp_path=tmp_path).output == 'Queued 1 message.\n'
    assert {address for _, address in queued()} == {'bob@example.com', 'carol@example.com'}
    # Another subject is another announcement.
    assert announce(app, 'product_updates', subject='More news',
                    tmp_path=tmp_path).output == 'Queued 2 messages.\n'


def test_a_dry_run_counts_and_queues_nothing(app, people, tmp_path):
    before = every_row()
    result = announce(app, 'tips_and_tricks', '--dry-run', tmp_path=tmp_path)
    assert result.exit_code == 0 and result.output == 'Would queue 1 message (dry run).\n'
    assert every_row() == before
    announce(app, 'tips_and_tricks', tmp_path=tmp_path)
    again = announce(app, 'tips_and_tricks', '--dry-run', tmp_path=tmp_path)
    assert again.output == 'Would queue 0 messages (dry run).\n'


def test_queuing_in_batches_reaches_everyone_once(app, people, tmp_path, monkeypatch):
    for n in range(7):
        make_user(f'user{n}@example.com', f'user{n}')  # product_updates on
    monkeypatch.setattr(announcements, 'BATCH', 2)
    with database.db.connection_context():
        assert announcements.announce('product_updates', 'News', BODY) == 8
        assert announcements.announce('product_updates', 'News', BODY) == 0
    assert len(queued()) == 8


def test_an_address_that_bounced_for_good_is_not_sent_announcements(app, people, tmp_path):
    with database.db.connection_context():
        models.User.update(email_undeliverable_at=models.utcnow()).where(
            models.User.id == people['bob'].id).execute()
    assert announce(app, 'product_updates', tmp_path=tmp_path).output == 'Queued 0 messages.\n'


@pytest.mark.parametrize('args, where', [
    (['--topic', 'system'], '--topic'),
    (['--subject', 'Two\nlines'], '--subject'),
    (['--subject', 'x' * 201], '--subject'),
    (['--subject', '  '], '--subject'),
    (['--body', ' \n\n '], '--body-file'),
    (['--body', 'Hello\x00there'], '--body-file'),
    (['--body', b'caf\xe9 latin-1'], '--body-file'),
])
def test_the_command_refuses_bad_input_and_queues_nothing(app, people, tmp_path, args, where):
    options = {'--topic': 'product_updates', '--subject': 'News', '--body': BODY}
    options.update(zip(args[::2], args[1::2]))
    body = options.pop('--body')
    before = every_row()
    result = announce(app, options['--topic'], subject=options['--subject'], body=body,
                      tmp_path=tmp_path)
    assert result.exit_code == 2 and where in result.output
    assert every_row() == before


def test_a_topic_turned_off_before_sending_withdraws_its_announcements(app, people, tmp_path):
    announce(app, 'product_updates', tmp_path=tmp_path)
    announce(app, 'tips_and_tricks', tmp_path=tmp_path)
    with database.db.connection_context():
        product = mail.Email.get(mail.Email.user_id == people['bob'].id,
                                 mail.Email.announcement_id == announcements.Announcement.id_of(
                                     'product_updates', 'News', BODY))
        product.sent()
    path = f"/unsubscribe/{announcements.unsubscribe_token(people['bob'].id, 'tips_and_tricks')}"
    assert app.test_client().post(path).status_code == 200
    with database.db.connection_context():
        models.Preferences.change(people['bob'], {'product_updates': False})
        left = [(email.id, email.status) for email in mail.Email.select()]
    assert left == [(product.id, 'sent')]  # what was sent stays


def test_a_deleted_accounts_announcements_go_with_it(app, people, tmp_path):
    announce(app, 'product_updates', tmp_path=tmp_path)
    announce(app, 'tips_and_tricks', tmp_path=tmp_path)
    with database.db.connection_context():
        models.User.get_by_id(people['bob'].id).delete_account()
        left = mail.Email.select(mail.Email.kind).where(mail.Email.user_id == people['bob'].id)
        assert [email.kind for email in left] == ['user.delete']  # the deletion notice alone
    assert queued() == set()


def test_an_announcement_has_both_parts_and_the_one_click_headers(app, people, tmp_path):
    announce(app, 'community_updates', subject='Meetup <Berlin>', tmp_path=tmp_path)
    email = message_to('alice@example.com')
    with database.db.connection_context():
        subject, text, page = announcements.content(email)
        headers = announcements.headers(email)
    assert subject == 'Meetup <Berlin>'
    assert headers['List-Unsubscribe-Post'] == 'List-Unsubscribe=One-Click'
    link = headers['List-Unsubscribe'][1:-1]
    assert 'Penstock now speaks PostgreSQL 18.\nUpgrade when you like.\n\n' in text
    assert link in text and 'Community Updates' in text
    document = BeautifulSoup(page, 'html.parser')
    assert document.find('h1').get_text() == 'Meetup <Berlin>'
    paragraphs = [p.get_text() for p in document.find_all('p')]
    assert 'Penstock now speaks PostgreSQL 18.Upgrade when you like.' in paragraphs
    assert 'Thanks for reading <3' in paragraphs  # escaped in the HTML, shown as written
    assert '<3' not in page and '&lt;3' in page
    assert document.find('a', string='Unsubscribe from Community Updates')['href'] == link
    settings = document.find('a', string='Notification settings')['href']
    assert settings in text
    client = app.test_client()
    log_in(client, 'alice')
    assert html(client.get(urlsplit(settings).path)).find('form', id='notifications-form')


def test_a_one_click_post_turns_the_topic_off_without_a_login(app, people, tmp_path):
    announce(app, 'tips_and_tricks', tmp_path=tmp_path)
    path = unsubscribe_path(message_to('bob@example.com'))
    # RFC 8058 §3.2: what a mail provider sends, with no cookie and no CSRF token.
    response = app.test_client().post(path, data={'List-Unsubscribe': 'One-Click'},
                                      environ_base={'REMOTE_ADDR': '203.0.113.7'})
    assert response.status_code == 200
    assert response.headers['Cache-Control'] == 'no-store'
    assert html(response).find('h1').get_text() == 'Unsubscribed'
    assert topics_of(people['bob']) == {'product_updates'}
    with database.db.connection_context():
        record = models.AuditRecord.get(models.AuditRecord.action_type ==
                                        'user.preferences.update',
                                        models.AuditRecord.identity == people['bob'].id,
                                        models.AuditRecord.actor_ip == '203.0.113.7')
    assert record.actor_id == people['bob'].id
    assert json.loads(record.data) == {'communication_tips_and_tricks': 'disabled',
                                       'via': 'email'}
    # Again (a second click, a provider retrying, as multipart/form-data this time): still
    # 200, nothing more written.
    before = every_row()
    assert app.test_client().post(path, data={'List-Unsubscribe': 'One-Click'},
                                  content_type='multipart/form-data').status_code == 200
    assert every_row() == before


def test_the_link_shows_a_page_that_changes_nothing_and_its_button_unsubscribes(
        app, people, tmp_path):
    announce(app, 'community_updates', tmp_path=tmp_path)
    path = unsubscribe_path(message_to('alice@example.com'))
    client = app.test_client()
    before = every_row()
    response = client.get(path)  # a person, or a mail scanner fetching the link
    assert response.status_code == 200 and every_row() == before
    page = html(response)
    assert page.find('h1').get_text() == 'Unsubscribe from Community Updates'
    form = page.find('form', method='post')
    assert form['action'] == path
    assert form.find('button', type='submit').get_text(strip=True) == 'Unsubscribe'
    fields = {field['name']: field['value'] for field in form.find_all('input')}
    done = client.post(form['action'], data=fields)
    assert done.status_code == 200
    assert 'You will get no more Community Updates emails' in html(done).find(
        role='status').get_text()
    assert topics_of(people['alice']) == set()
    # Once off, the page says so and offers no button.
    page = html(client.get(path))
    assert page.find('form', method='post') is None
    assert 'not subscribed' in page.find(role='status').get_text()


def forged_tokens(people):
    alice = people['alice'].id
    real = announcements.unsubscribe_token(alice, 'community_updates')
    payload, signature = real.split('.')
    other_key = URLSafeSerializer('another secret key', salt='unsubscribe')
    other_salt = URLSafeSerializer('test secret key', salt='api-next-token')
    mine = URLSafeSerializer('test secret key', salt='unsubscribe')
    return {
        'altered signature': payload + '.' + signature[:-2] + ('AA' if signature[-2:] != 'AA'
                                                               else 'BB'),
        'altered payload': other_key.dumps([people['bob'].id, 'community_updates']).split(
            '.')[0] + '.' + signature,
        'signed with another key': other_key.dumps([alice, 'community_updates']),
        'another salt': other_salt.dumps([alice, 'community_updates']),
        'unknown user': mine.dumps(['u_nosuchuser', 'community_updates']),
        'unknown topic': mine.dumps([alice, 'system']),
        'not a pair': mine.dumps({'user': alice}),
        'not a list': mine.dumps(alice),
        'garbage': 'x' * 300,
        'empty payload': '.' + signature,
    }


def test_a_forged_or_altered_link_answers_404_and_changes_nothing(app, people):
    before = every_row()
    client = app.test_client()
    for name, token in forged_tokens(people).items():
        for method in ('GET', 'POST'):
            response = client.open(f'/unsubscribe/{token}', method=method,
                                   data={'List-Unsubscribe': 'One-Click'})
            assert response.status_code == 404, (name, method)
            assert html(response).find(role='alert').get_text().startswith(
                'This unsubscribe link is not valid'), (name, method)
    assert every_row() == before
    assert topics_of(people['alice']) == {'community_updates'}


def test_a_link_turns_off_only_its_own_users_topic(app, people):
    with database.db.connection_context():
        models.Preferences.change(people['bob'], {'community_updates': True})
    client = app.test_client()
    path = f"/unsubscribe/{announcements.unsubscribe_token(people['bob'].id, 'tips_and_tricks')}"
    assert client.post(path).status_code == 200
    assert topics_of(people['bob']) == {'product_updates', 'community_updates'}
    assert topics_of(people['alice']) == {'community_updates'}


def test_refused_links_are_rate_limited_per_ip(app, people):
    app.config['UNSUBSCRIBE_FAILURES_PER_IP'] = '3 per minute'
    client = app.test_client()
    valid = f"/unsubscribe/{announcements.unsubscribe_token(people['bob'].id, 'tips_and_tricks')}"
    for _ in range(5):  # valid links are not counted
        assert client.get(valid).status_code == 200
    for _ in range(3):
        assert client.post('/unsubscribe/forged').status_code == 404
    response = client.get('/unsubscribe/forged')
    assert response.status_code == 429
    assert html(response).find(role='alert')
    assert topics_of(people['bob']) == {'product_updates', 'tips_and_tricks'}
