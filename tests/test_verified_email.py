"""Verified email addresses (SPEC §2, issue 23 findings 4 and 6): the verification link, mail
held until it is opened, addresses unique among verified accounts, Change email, and
email-validator's one-mailbox rule, as the attacker and the victim meet them."""
import datetime
import re
import threading
from urllib.parse import urlsplit

import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from peewee import IntegrityError
from playhouse.migrations import Runner

import addresses
import announcements
import credentials
import database
import mail
import models
from app import create_app
from tests.conftest import MADE_SECRETS, TEST_PASSWORD_KEY
from tests.helpers import (
    HTMX,
    PASSWORD,
    audit,
    csrf_token,
    html,
    log_in,
    make_stale,
    make_user,
)
from tests.test_mail_end_to_end import deliver, parts
from tests.test_models import insert

VICTIM = 'victim@example.com'
LINK = re.compile(r'https?://\S+/signup/confirm\?t=[\w.-]+')
LISTS = ['me@attacker.example,root', 'me@attacker.example, root@example.com',
         'a@example.com; b@example.com', 'Me <me@attacker.example>',
         'me@attacker.example (root)', '"me root"@attacker.example', 'me@[127.0.0.1]']


def sign_up(client, email, handle, password=PASSWORD, headers=None):
    return client.post('/signup', headers=headers, data={
        'email': email, 'handle': handle, 'password': password,
        'csrf_token': csrf_token(client, '/signup')})


def account(handle):
    with database.db.connection_context():
        return models.User.get(models.User.handle == handle)


def outbox(**where):
    with database.db.connection_context():
        query = mail.Email.select().order_by(mail.Email.created_at, mail.Email.id)
        for name, value in where.items():
            query = query.where(getattr(mail.Email, name) == value)
        return list(query)


def links(message):
    """The distinct verification links in both parts of a received message."""
    return {link for text in parts(message).values() for link in LINK.findall(text)}


def path_of(link):
    parts_ = urlsplit(link)
    return f'{parts_.path}?{parts_.query}'


def field_error(response, name):
    error = html(response).find(id=f'{name}-error')
    return error.get_text(strip=True) if error else None


def stale_token(user_id, address, age):
    """A verification token for (`user_id`, `address`) signed `age` ago, as the app signs."""
    class Past(TimestampSigner):
        def get_timestamp(self):
            return int((datetime.datetime.now(datetime.timezone.utc) - age).timestamp())
    return URLSafeTimedSerializer(models.Config.secret_key, salt='verify-email',
                                  signer=Past).dumps([user_id, address])


def test_sign_up_sends_one_verification_email_with_one_link_and_the_banner_shows(
        app, client, smtp_server):
    response = sign_up(client, 'New.Person@Example.COM', 'newbie')
    assert response.status_code == 302
    newbie = account('newbie')
    assert (newbie.email, newbie.email_verified_at) == ('new.person@example.com', None)
    [message] = deliver(smtp_server)
    assert message['Subject'] == 'Verify your email address'
    assert message['To'] == 'new.person@example.com'
    [link] = links(message)
    assert link.startswith(f'{mail.Config.public_url}/signup/confirm?t=')
    token = urlsplit(link).query.removeprefix('t=')
    assert set(re.findall(r'[A-Za-z0-9_-]+', token)) <= MADE_SECRETS  # every word of it
    assert set(re.findall(r'https?://\S+', parts(message)['text/plain'])) == {link}

    banner = html(client.get('/')).find('section', id='verify-email')
    assert banner.find('h2').get_text(strip=True) == 'Verify your email address'
    # A phone wraps the address after its @ and dots, not at 'example.te|st'.
    assert [str(part) for part in banner.find('strong').contents] == [
        'new.', '<wbr/>', 'person@', '<wbr/>', 'example.', '<wbr/>', 'com']
    assert banner.find('button').get_text(strip=True) == 'Resend verification email'
    # The sign-up's own email counts: 2 resends, not 3, reach the hourly limit.
    limit = banner.find(id=banner.find('button')['aria-describedby'])
    assert limit.get_text() == 'At most 3 verification emails an hour, the first one included.'

    page = client.get(path_of(link))
    assert page.status_code == 200 and page.headers['Cache-Control'] == 'no-store'
    assert 'new.person@example.com is verified' in html(page).find(id='verified').get_text()
    assert html(page).find('section', id='verify-email') is None
    assert account('newbie').email_verified_at is not None
    assert html(client.get('/')).find('section', id='verify-email') is None
    assert [r.data for r in audit('user.email.verify')] == [
        '{"address": "new.person@example.com"}']
    again = client.get(path_of(link))  # opened twice (a mail scanner, a second click)
    assert again.status_code == 200 and 'already verified' in html(again).get_text()
    assert len(audit('user.email.verify')) == 1


def test_an_attacker_with_the_victims_address_cannot_make_mail_flow_to_it(app, smtp_server):
    attacker = app.test_client()
    assert sign_up(attacker, VICTIM, 'mallory').status_code == 302
    mallory = account('mallory')
    with database.db.connection_context():
        secret = credentials.Token.issue(mallory)[1]  # a System email, held
    for _ in range(5):
        answer = attacker.post('/api/v0/user/mallory/password',
                               headers={'Authorization': f'Bearer {secret}'})
        assert answer.status_code in (200, 201, 429)
    resend = {'csrf_token': csrf_token(attacker, '/')}
    for _ in range(4):
        attacker.post('/signup/resend', data=resend)
    refused = attacker.post('/signup/resend', data=resend, headers=HTMX)
    assert refused.status_code == 429 and 0 < int(refused.headers['Retry-After']) <= 3600
    assert 'You can ask for another at' in html(refused).find(role='alert').get_text()
    received = deliver(smtp_server)  # the worker sends as it goes
    held = outbox(user_id=mallory.id, held=True)  # the token's and the rotations' notices
    assert {email.kind for email in held} >= {'token.create', 'user.password.rotate'}
    assert all(email.status == 'pending' for email in held)
    # A new account with the same address, after deleting this one, is no way round it.
    with database.db.connection_context():
        models.User.get_by_id(mallory.id).delete_account()
    second = app.test_client()
    assert sign_up(second, VICTIM, 'mallory2').status_code == 302
    second.post('/signup/resend', data={'csrf_token': csrf_token(second, '/')})
    assert 'You can ask for another at' in html(second.get('/')).find(id='flash').get_text()

    assert deliver(smtp_server) == received
    assert [(m['To'], m['Subject']) for m in received] == [
        (VICTIM, 'Verify your email address')] * addresses.VERIFY_EMAILS_PER_HOUR


def test_the_victim_signs_up_and_verifies_then_the_attacker_cannot(app, smtp_server):
    attacker, victim = app.test_client(), app.test_client()
    assert sign_up(attacker, VICTIM, 'mallory', password='mallory password').status_code == 302
    [to_attacker] = deliver(smtp_server)
    # The address only an unverified account holds is not taken: the victim signs up with it.
    assert sign_up(victim, 'Victim@EXAMPLE.com', 'victim').status_code == 302
    to_victim = deliver(smtp_server)[1]
    assert victim.get(path_of(*links(to_victim))).status_code == 200
    assert account('victim').email_verified_at is not None

    refused = attacker.get(path_of(*links(to_attacker)))
    assert refused.status_code == 409
    assert addresses.LINK_TAKEN in html(refused).find(class_='form-error').get_text()
    assert account('mallory').email_verified_at is None
    # Taken now: nobody else signs up with it, however it is written.
    third = sign_up(app.test_client(), 'VICTIM@example.com', 'third')
    assert third.status_code == 422 and 'already exists' in field_error(third, 'email')

    # A login by the address reaches the verified account, whatever its case.
    browser = app.test_client()
    assert log_in(browser, 'VICTIM@Example.com').status_code == 302
    assert html(browser.get('/')).find(id='verify-email') is None
    assert log_in(app.test_client(), VICTIM, 'mallory password').status_code == 401
    assert log_in(app.test_client(), 'mallory', 'mallory password').status_code == 302


def test_with_only_unverified_holders_a_login_by_address_reaches_the_oldest(app):
    make_user(VICTIM, 'first', verified=False)
    make_user(VICTIM, 'second', verified=False)
    assert log_in(app.test_client(), VICTIM).status_code == 302
    with database.db.connection_context():
        assert models.User.named(VICTIM).handle == 'first'


@pytest.mark.parametrize('mangle', ['forged', 'altered', 'cut', 'expired', 'empty'])
def test_a_forged_altered_or_expired_link_changes_nothing(app, client, mangle):
    newbie = make_user('newbie@example.com', 'newbie', verified=False)
    good = models.verification_token(newbie.id, newbie.email)
    token = {'forged': URLSafeTimedSerializer('not our key', salt='verify-email').dumps(
                 [newbie.id, newbie.email]),
             'altered': good[:-3] + ('AAA' if not good.endswith('AAA') else 'BBB'),
             'cut': good[:len(good) // 2],
             'expired': stale_token(newbie.id, newbie.email, datetime.timedelta(hours=25)),
             'empty': ''}[mangle]
    response = client.get('/signup/confirm', query_string={'t': token})
    assert response.status_code == (410 if mangle == 'expired' else 400)
    expected = addresses.LINK_EXPIRED if mangle == 'expired' else addresses.LINK_BROKEN
    assert html(response).find(class_='form-error').get_text(strip=True) == expected
    assert account('newbie').email_verified_at is None
    assert audit('user.email.verify') == []


def test_held_system_emails_go_once_the_address_is_verified(app, smtp_server):
    newbie = make_user('newbie@example.com', 'newbie', verified=False)
    with database.db.connection_context():
        credentials.Token.issue(newbie)
    assert deliver(smtp_server) == []
    [held] = outbox(kind='token.create')
    assert held.held
    response = app.test_client().get(
        '/signup/confirm', query_string={'t': models.verification_token(newbie.id,
                                                                        newbie.email)})
    assert response.status_code == 200
    [message] = deliver(smtp_server)
    assert message['To'] == 'newbie@example.com'
    assert message['Subject'].startswith('New API token pst_…')
    assert not outbox(kind='token.create')[0].held


def test_an_unverified_account_is_sent_no_announcement(app, tmp_path):
    make_user('quiet@example.com', 'quiet', verified=False)
    make_user('heard@example.com', 'heard')
    with database.db.connection_context():
        assert announcements.announce('product_updates', 'News', 'Body') == 1
    assert [email.to_address for email in outbox(kind='announcement')] == ['heard@example.com']


@pytest.mark.parametrize('typed', LISTS)
def test_a_list_or_a_comment_is_refused_at_sign_up(client, typed):
    response = sign_up(client, typed, 'mallory')
    assert response.status_code == 422
    assert field_error(response, 'email').startswith('Enter one email address')
    with database.db.connection_context():
        assert models.User.select().count() == 0
        assert mail.Email.select().count() == 0


def test_the_demo_domain_and_case_are_normalised(app):
    with database.db.connection_context():
        assert models.normalised_email('Demo@Penstock.TEST') == 'demo@penstock.test'
        assert models.normalised_email('x@BÜCHER.example') == 'x@xn--bcher-kva.example'
        for typed in ['a@b.local', 'a@localhost', 'a@b.invalid', 'a@', '']:
            with pytest.raises(models.Invalid):
                models.normalised_email(typed)


def test_change_email_end_to_end(client, logged_in, smtp_server):
    response = client.post('/user/alice/settings/profile/email', data={
        'new_email': 'Alice@Work.Example', 'csrf_token': csrf_token(client, '/')})
    assert response.status_code == 303
    page = html(client.get(response.headers['Location']))
    assert 'We sent a link to alice@work.example' in page.find(id='flash').get_text()
    assert 'alice@work.example' in page.find(id='email-pending').get_text()
    alice = account('alice')
    assert (alice.email, alice.new_email) == ('alice@example.com', 'alice@work.example')
    received = deliver(smtp_server)
    by_address = {m['To']: m for m in received}
    assert set(by_address) == {'alice@example.com', 'alice@work.example'}
    notice = by_address['alice@example.com']
    assert 'alice@work.example' in parts(notice)['text/plain'] and not links(notice)
    [link] = links(by_address['alice@work.example'])
    assert [r.data for r in audit('user.email.update')] == [
        '{"address": {"new": "alice@work.example", "old": "alice@example.com"}}']

    # Only opening the link replaces the address; the old one still logs in until then.
    opened = client.get(path_of(link))
    assert opened.status_code == 200
    alice = account('alice')
    assert (alice.email, alice.new_email) == ('alice@work.example', None)
    assert alice.email_verified_at is not None
    assert audit('user.email.verify')[0].data == (
        '{"address": "alice@work.example", "replaced": "alice@example.com"}')
    assert log_in(client.application.test_client(), 'alice@work.example').status_code == 302
    assert log_in(client.application.test_client(), 'alice@example.com').status_code == 401


def test_change_email_with_htmx_answers_in_place(client, logged_in):
    response = client.post('/user/alice/settings/profile/email', headers=HTMX, data={
        'new_email': 'me@attacker.example,root', 'csrf_token': csrf_token(client, '/')})
    assert response.status_code == 422
    form = html(response).find('form', id='email-form')
    assert form.find('label', string='New email') is not None
    assert field_error(response, 'new_email').startswith('Enter one email address')
    assert account('alice').new_email is None and outbox() == []
    response = client.post('/user/alice/settings/profile/email', headers=HTMX, data={
        'new_email': 'al@work.example', 'csrf_token': csrf_token(client, '/')})
    assert response.status_code == 200
    assert html(response).find(id='email-pending') is not None
    assert [(e.kind, e.to_address) for e in outbox()] == [
        ('user.email.verify', 'al@work.example'), ('user.email.update', 'alice@example.com')]


@pytest.mark.parametrize('typed', LISTS[:3])
def test_change_email_refuses_lists(client, logged_in, typed):
    response = client.post('/user/alice/settings/profile/email', data={
        'new_email': typed, 'csrf_token': csrf_token(client, '/')})
    assert response.status_code == 422
    assert field_error(response, 'new_email').startswith('Enter one email address')
    assert account('alice').new_email is None and outbox() == []


def test_change_email_needs_a_recent_password(client, logged_in):
    make_stale(logged_in)
    response = client.post('/user/alice/settings/profile/email', data={
        'new_email': 'al@work.example', 'csrf_token': csrf_token(client, '/')})
    assert response.status_code == 303
    assert urlsplit(response.headers['Location']).path == '/reauth'
    assert account('alice').new_email is None and outbox() == []


def test_change_email_to_an_address_another_account_verified_is_refused(client, logged_in):
    make_user('bob@example.com', 'bob')
    response = client.post('/user/alice/settings/profile/email', data={
        'new_email': 'BOB@example.com', 'csrf_token': csrf_token(client, '/')})
    assert response.status_code == 422
    assert field_error(response, 'new_email') == addresses.ADDRESS_TAKEN
    assert account('alice').new_email is None


def test_a_change_links_expire_after_24_hours_and_a_newer_request_voids_the_older(app):
    alice = make_user()
    with database.db.connection_context():
        addresses.request_change(alice, 'one@example.com')
        addresses.request_change(alice, 'two@example.com')
    client = app.test_client()
    stale = client.get('/signup/confirm', query_string={
        't': models.verification_token(alice.id, 'one@example.com')})
    assert stale.status_code == 409
    assert html(stale).find(class_='form-error').get_text(strip=True) == addresses.LINK_STALE
    expired = client.get('/signup/confirm', query_string={
        't': stale_token(alice.id, 'two@example.com', models.VERIFY_LINK_LIFETIME
                         + datetime.timedelta(minutes=1))})
    assert expired.status_code == 410
    fresh = client.get('/signup/confirm', query_string={
        't': stale_token(alice.id, 'two@example.com', models.VERIFY_LINK_LIFETIME
                         - datetime.timedelta(minutes=1))})
    assert fresh.status_code == 200
    assert account('alice').email == 'two@example.com'


def test_resend_is_limited_to_3_an_hour_with_and_without_javascript(app, client):
    assert sign_up(client, 'newbie@example.com', 'newbie').status_code == 302
    form = {'csrf_token': csrf_token(client, '/user/newbie/settings/profile')}
    first = client.post('/signup/resend', data=form)
    assert first.status_code == 303 and first.headers['Location'] == '/'
    assert 'We sent a new link' in html(client.get('/')).find(id='flash').get_text()
    second = client.post('/signup/resend', data=form, headers=HTMX)
    assert second.status_code == 200
    assert 'We sent a new link' in html(second).find(id='flash').get_text()
    assert html(second).find('section', id='verify-email').find('button') is not None
    third = client.post('/signup/resend', data=form)
    assert 'You can ask for another at' in html(client.get('/')).find(id='flash').get_text()
    assert third.status_code == 303
    assert len(outbox(kind='user.email.verify')) == 3
    said = html(client.get('/user/newbie/settings/notifications')).find(id='system-address')
    assert 'once you have verified it (until then they wait)' in said.get_text()
    no_csrf = client.post('/signup/resend')
    assert no_csrf.status_code == 400


def test_the_demo_user_counts_as_verified(app):
    assert app.test_cli_runner().invoke(args=['demo']).exit_code == 0
    assert account('demo').email_verified_at is not None
    assert outbox() == []


def test_the_migration_keeps_the_oldest_of_colliding_addresses_and_holds_the_invalid(
        make_database_url):
    """Accounts of 0007: two addresses that are one once normalised, one that is a list, one
    plain; pending mail to one left unverified. After 0009 the oldest keeps its address
    verified, the others are unverified and their mail held, and the index lets nobody else
    verify the address kept."""
    url = make_database_url('old', empty=True)
    create_app({'SECRET_KEY': 'x', 'DATABASE_URL': url, 'DATABASE_PASSWORD_KEYS':
                TEST_PASSWORD_KEY})
    runner = Runner(database.db.obj, database.MIGRATIONS)
    runner.up(target='0007_email')
    now = models.utcnow()
    rows = [('u_first', 'Ann@Example.COM', 'ann', now - datetime.timedelta(days=2)),
            ('u_later', 'ann@example.com', 'ann2', now - datetime.timedelta(days=1)),
            ('u_list', 'me@attacker.example,root', 'mallory', now),
            ('u_plain', 'Bob@Example.com', 'bob', now)]
    with database.db.connection_context():
        for user_id, email, handle, created in rows:
            insert('user', id=user_id, email=email, handle=handle, password_hash='x',
                   status='accepted', created_at=created, version_id=1, avatar_version=1)
        for number, user_id in enumerate(['u_later', 'u_plain']):
            insert('email', id=f'm_{number}', kind='token.create', user_id=user_id,
                   to_address='x', data='{}', status='pending', attempts=0, run_after=now,
                   created_at=now)
    assert '0009_verified_email' in runner.up()
    with database.db.connection_context():
        users = {user.id: (user.email, user.email_verified_at is not None)
                 for user in models.User.select()}
        assert users == {'u_first': ('ann@example.com', True),
                         'u_later': ('ann@example.com', False),
                         'u_list': ('me@attacker.example,root', False),
                         'u_plain': ('bob@example.com', True)}
        assert {email.id: email.held for email in mail.Email.select()} == {
            'm_0': True, 'm_1': False}
        with pytest.raises(IntegrityError), database.db.atomic():
            models.User.update(email_verified_at=now).where(
                models.User.id == 'u_later').execute()
        assert models.User.named('ANN@example.com').id == 'u_first'
    database.db.close()


def test_the_hourly_limit_holds_under_simultaneous_requests(app):
    newbie = make_user('newbie@example.com', 'newbie', verified=False)
    start, outcomes = threading.Barrier(8), []

    def resend():
        start.wait(timeout=30)
        with database.db.connection_context():
            try:
                addresses.ask_to_verify(newbie)
                outcomes.append('sent')
            except addresses.TooSoon:
                outcomes.append('refused')

    threads = [threading.Thread(target=resend) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == ['refused'] * 5 + ['sent'] * 3
    assert len(outbox(kind='user.email.verify')) == 3


def test_a_page_of_one_card_shows_no_verify_banner(app, client):
    """Confirm your password is one task; on a phone the banner above it hid its field."""
    assert sign_up(client, 'newbie@example.com', 'newbie').status_code == 302
    assert html(client.get('/')).find('section', id='verify-email') is not None
    make_stale(account('newbie'))
    asked = client.get('/user/newbie/settings/advanced/reset-authentication')
    page = html(client.get(asked.headers['Location']))
    assert page.find('h1').get_text() == 'Confirm your password'
    assert page.find('section', id='verify-email') is None


def test_an_unverified_account_that_changes_its_address_is_told_of_both_links(app, client):
    """Signed up with a typo, then Change email: the banner names the new address too."""
    assert sign_up(client, 'newbie@exmaple.com', 'newbie').status_code == 302
    response = client.post('/user/newbie/settings/profile/email', data={
        'new_email': 'newbie@example.com', 'csrf_token': csrf_token(client, '/')})
    assert response.status_code == 303
    said = html(client.get('/')).find('section', id='verify-email').find('p')
    assert [strong.get_text() for strong in said.find_all('strong')] == [
        'newbie@exmaple.com', 'newbie@example.com']
    assert 'the address you asked to change to. Open either' in said.get_text()
