"""Settings → Audit Log: sentences, ownership, Load more (htmx and plain), filter, exports."""
import csv
import datetime
import io
import json
import pathlib
import re

import pytest

import database
import models
import workspaces
from tests.helpers import HTMX, html, log_in, make_user

URL = '/user/alice/settings/audit'
MORE = {**HTMX, 'HX-Target': 'audit-rows'}
FILTER = {**HTMX, 'HX-Target': 'audit-log'}
SPEC_FIELDS = ['id', 'action_type', 'actor_id', 'actor_handle', 'actor_display_name',
               'actor_avatar_url', 'actor_ip', 'identity_id', 'identity_handle', 'target_id',
               'target_handle', 'data', 'created_at']
BASE_TIME = datetime.datetime(2030, 1, 1, 12, 0, 0)


def write(user, action_type, data=None, ip='192.0.2.7', at=None):
    """An audit record as the app writes it; `at` pins its time so order is certain."""
    with database.db.connection_context():
        actor = models.User.get_by_id(user.id)
        record = models.AuditRecord.write(action_type, actor, ip, target=actor, data=data)
        if at is not None:
            (models.AuditRecord.update(created_at=at)
             .where(models.AuditRecord.id == record.id).execute())
    return record.id


def write_many(user, count, action_type='token.create'):
    """`count` records a second apart, newest last; returns their ids newest first."""
    with database.db.connection_context(), database.db.atomic():
        ids = [write(user, action_type, {'token_id': f't_{i}', 'last4': f'{i:04d}'},
                     at=BASE_TIME + datetime.timedelta(seconds=i)) for i in range(count)]
    return ids[::-1]


def record_ids(page):
    return [entry['data-record'] for entry in page.select('li[data-record]')]


def sentences(page):
    return [' '.join(p.get_text().split()) for p in page.select('li[data-record] .audit-sentence')]


def details(entry):
    """An entry's details as (label, value) pairs, from its <dl> behind Details."""
    box = entry.find('details')
    assert box.find('summary').get_text(strip=True) == 'Details'
    return [(dt.get_text(), dt.find_next_sibling('dd').get_text()) for dt in box.find_all('dt')]


def load_more_link(page):
    return page.find('a', string='Load more')


def test_audit_log_is_a_full_page_normally(client, logged_in):
    response = client.get(URL)
    assert response.status_code == 200
    assert {'HX-Request', 'HX-Target'} <= set(response.vary)
    page = html(response)
    assert page.find('header', id='topbar') is not None
    assert page.title.get_text() == 'Audit Log · Penstock'
    assert page.find(id='panel').find('h2').get_text(strip=True) == 'Audit Log'
    nav = page.find('nav', attrs={'aria-label': 'Settings'})
    assert nav.find(attrs={'aria-current': 'page'}).get_text(strip=True) == 'Audit Log'
    log = page.find('ol', id='audit-rows')
    assert log.find_parent(id='audit-log') is not None
    assert page.find(id=log['aria-labelledby']).get_text() == 'All records'
    assert [entry.name for entry in log.find_all(recursive=False)] == ['li', 'li']
    assert page.find('table') is None


def test_audit_log_is_only_the_panel_for_htmx(client, logged_in):
    response = client.get(URL, headers=HTMX)
    assert response.status_code == 200
    fragment = html(response)
    assert fragment.find('html') is None and fragment.find('header') is None
    assert fragment.find('h2', id='panel-heading').get_text(strip=True) == 'Audit Log'
    assert fragment.find('nav', id='settings-nav')['hx-swap-oob'] == 'true'
    assert fragment.find(id='audit-log') is not None


def test_audit_log_needs_login_and_is_404_for_another_users_handle(client, user, other_user):
    response = client.get(URL)
    assert response.status_code == 302
    assert response.headers['Location'] == f'/login?next={URL}'
    log_in(client, 'alice')
    assert client.get('/user/bob/settings/audit').status_code == 404
    assert client.get('/user/bob/settings/audit/export.csv').status_code == 404


def test_records_are_newest_first_with_a_readable_sentence(client, logged_in):
    write(logged_in, 'token.create', {'token_id': 't_1', 'last4': 'a1b2'},
          at=BASE_TIME)
    write(logged_in, 'token.delete', {'token_id': 't_1', 'last4': 'a1b2'},
          at=BASE_TIME + datetime.timedelta(minutes=5))
    page = html(client.get(URL))
    assert sentences(page)[:2] == ['alice deleted token pst_…a1b2',
                                   'alice created token pst_…a1b2']
    first = page.select_one('li[data-record]')
    sentence = first.select_one('p.audit-sentence')
    avatar = sentence.find(True)  # the sentence starts with the actor's avatar, 24 px
    assert avatar.name == 'img' and 'avatar' in avatar['class']
    assert avatar['src'].startswith(f'/avatars/{logged_in.id}/')
    assert (avatar['width'], avatar['height'], avatar['alt']) == ('24', '24', '')
    assert first.get_text().count('alice') == 1  # the actor is named once
    meta = sentence.find_next_sibling('p')
    assert 'audit-meta' in meta['class']
    assert ' '.join(meta.get_text().split()) == 'Jan 1, 2030, 12:05 UTC IP 192.0.2.7'
    time = meta.find('time')
    assert time['datetime'] == '2030-01-01T12:05:00Z'
    assert time['title'] == '2030-01-01 12:05:00 UTC'
    assert details(first) == [('Token', 'pst_…a1b2'), ('Token ID', 't_1')]
    assert first.find('dd').find('code').get_text() == 'pst_…a1b2'


def test_the_actor_is_named_once_by_the_display_name_they_had_then(client, logged_in):
    with database.db.connection_context():
        models.User.get_by_id(logged_in.id).set_display_name('Alice Liddell')
    write(logged_in, 'token.create', {'token_id': 't_1', 'last4': 'a1b2'},
          at=BASE_TIME + datetime.timedelta(days=1))
    with database.db.connection_context():
        models.AuditRecord.update(actor_display_name=None, actor_handle=None).where(
            models.AuditRecord.action_type == 'user.signup').execute()
    page = html(client.get(URL))
    assert sentences(page)[:2] == ['Alice Liddell created token pst_…a1b2',
                                   'Alice Liddell changed their display name to “Alice Liddell”']
    assert sentences(page)[-1] == 'Someone signed up'
    entry = page.select_one('li[data-record]')
    assert entry.find('strong').get_text() == 'Alice Liddell'
    assert 'alice' not in entry.get_text()


def test_an_actor_who_is_gone_is_named_without_an_avatar(client, logged_in):
    record = write(logged_in, 'token.create', {'token_id': 't_1', 'last4': 'a1b2'},
                   at=BASE_TIME + datetime.timedelta(days=1))
    with database.db.connection_context():
        models.AuditRecord.update(actor_id='u_gone', actor_handle='carol').where(
            models.AuditRecord.id == record).execute()
    sentence = html(client.get(URL)).select_one('li[data-record] .audit-sentence')
    assert sentence.find('img') is None
    assert sentence.find(True)['class'] == ['avatar', 'avatar-24', 'audit-no-avatar']
    assert ' '.join(sentence.get_text().split()) == 'carol created token pst_…a1b2'


def test_a_record_without_data_or_ip_has_no_details_and_no_ip(client, logged_in):
    write(logged_in, 'user.avatar.delete', ip=None, at=BASE_TIME + datetime.timedelta(days=1))
    entry = html(client.get(URL)).select_one('li[data-record]')
    assert entry.find('details') is None
    assert entry.select_one('.audit-meta').get_text(strip=True) == 'Jan 2, 2030, 12:00 UTC'


SENTENCES = [
    ('user.signup', {}, 'alice signed up'),
    ('user.login', {'session_id': 's_1'}, 'alice logged in'),
    ('user.login.failed', {}, 'alice failed to log in (wrong password)'),
    ('user.login.failed', {'session_id': 's_1'},
     'alice failed to confirm their password (wrong password)'),
    ('user.logout', {'session_id': 's_1'}, 'alice logged out'),
    ('user.update', {'display_name': {'old': None, 'new': 'Alice A'}},
     'alice changed their display name to “Alice A”'),
    ('user.update', {'handle': {'old': 'alice', 'new': 'alicia'}},
     'alice changed their handle from alice to alicia'),
    ('user.update', {'display_name': {'old': 'Alice A', 'new': None}},
     'alice cleared their display name'),
    ('user.update', {}, 'alice updated their profile'),
    ('user.preferences.update', {'communication_tips_and_tricks': 'enabled'},
     'alice turned on Tips & Tricks emails'),
    ('user.preferences.update', {'communication_community_updates': 'enabled',
                                 'communication_product_updates': 'enabled',
                                 'communication_tips_and_tricks': 'disabled'},
     'alice turned on Community Updates and Product Updates emails, and off Tips & Tricks emails'),
    ('user.preferences.update', {}, 'alice changed their notification preferences'),
    ('user.preferences.update', {'communication_product_updates': 'disabled', 'via': 'email'},
     'alice unsubscribed from Product Updates with the link in an email'),
    ('user.preferences.update', {'via': 'email'}, 'alice unsubscribed with the link in an email'),
    ('token.create', {'token_id': 't_1', 'last4': 'a1b2'}, 'alice created token pst_…a1b2'),
    ('token.update', {'token_id': 't_1', 'last4': 'a1b2',
                      'status': {'old': 'active', 'new': 'inactive'}},
     'alice deactivated token pst_…a1b2'),
    ('token.update', {'token_id': 't_1', 'last4': 'a1b2',
                      'status': {'old': 'inactive', 'new': 'active'}},
     'alice activated token pst_…a1b2'),
    ('token.delete', {'token_id': 't_1', 'last4': 'a1b2'}, 'alice deleted token pst_…a1b2'),
    ('user.authentication.reset', {'sessions': 2, 'tokens': 1, 'temporary_tokens': 0},
     'alice reset authentication, logging out every session and revoking every token'),
    ('login_token.confirm', {'login_request_id': 'l_1', 'requested_from': '198.51.100.4'},
     'alice verified a CLI login request from 198.51.100.4'),
    ('login_token.decline', {'login_request_id': 'l_1', 'requested_from': '198.51.100.4'},
     'alice declined a CLI login request from 198.51.100.4'),
    ('login_token.create', {'login_request_id': 'l_1', 'temporary_token_id': 'p_1'},
     'alice logged in with the CLI (a temporary token was issued)'),
    ('user.email.update', {'address': {'old': 'alice@example.com', 'new': 'al@work.example'}},
     'alice asked to change their email address to al@work.example'),
    ('user.email.verify', {'address': 'alice@example.com'},
     'alice verified their email address alice@example.com'),
    ('user.email.verify', {'address': 'al@work.example', 'replaced': 'alice@example.com'},
     'alice changed their email address from alice@example.com to al@work.example'),
    ('user.avatar.update', {}, 'alice uploaded a new avatar'),
    ('user.avatar.delete', {}, 'alice reset their avatar'),
    ('user.password.rotate', {}, 'alice rotated their database password'),
    ('user.password.rotate', {'version': 3, 'workspaces': 2},
     'alice rotated their database password (version 3)'),
    ('user.password.rotate', {'version': 4, 'workspaces': 2, 'end_connections': True},
     'alice rotated their database password (version 4) and ended the open connections to '
     'their workspaces'),
    ('user.password.drift', {'role': 'alice', 'workspaces': 2},
     'alice had their database password changed inside a workspace; Penstock put it back'),
    ('user.session.revoke', {'session_id': 's_2'}, 'alice revoked another browser session'),
    ('workspace.create', {'workspace_id': 'w_1', 'handle': 'analytics'},
     'alice created workspace analytics'),
    ('workspace.delete', {'workspace_id': 'w_1', 'handle': 'analytics'},
     'alice deleted workspace analytics'),
    ('email.failed', {'kind': 'token.create', 'code': None},
     'alice could not be sent an email about a new token'),
    ('email.failed', {'kind': 'announcement', 'code': 550},
     'alice could not be sent an announcement (their mail server answered 550)'),
    ('email.failed', {'code': 550},
     'alice could not be sent an email (their mail server answered 550)'),
    ('workspace.frobnicate', {'x': 1}, 'alice did workspace.frobnicate'),
]


@pytest.mark.parametrize('action_type,data,expected', SENTENCES,
                         ids=[f'{a}-{i}' for i, (a, _, _) in enumerate(SENTENCES)])
def test_each_action_type_reads_as_a_sentence(client, logged_in, action_type, data, expected):
    write(logged_in, action_type, data, at=BASE_TIME)
    assert sentences(html(client.get(URL)))[0] == expected


def written_action_types():
    """Every action type the app's code writes an audit record with: by name, or as the
    DELETED of a models.Owned."""
    root = pathlib.Path(models.__file__).parent
    sources = [*root.glob('*.py'), *root.glob('views/*.py')]
    written = {action for path in sources for action in re.findall(
        r"AuditRecord\.write\(\s*'([a-z_.]+)'", path.read_text(encoding='utf-8'))}
    assert written, 'no AuditRecord.write calls found'
    owned = models.Owned.__subclasses__()
    assert owned, 'no models.Owned'
    return written | {model.DELETED for model in owned}


def test_sentences_cover_every_action_type_the_app_writes():
    assert written_action_types() <= {action for action, _, _ in SENTENCES}


def test_every_action_type_the_app_writes_is_listed_once_and_documented(client):
    written = written_action_types()
    assert written <= set(models.AUDIT_ACTIONS)
    document = client.get('/api/v0/openapi.json').get_json()
    action_type = document['components']['schemas']['ActionType']
    assert written <= set(action_type['enum']) == set(models.AUDIT_ACTIONS)


def test_the_filter_offers_every_action_type_the_app_writes(client, logged_in):
    options = {option['value'] for option in
               html(client.get(URL)).find('select', id='action_type').find_all('option')}
    assert written_action_types() <= options


def test_the_sentences_of_a_real_workspace_rotation_and_handle_change(client, logged_in):
    with database.db.connection_context():
        alice = models.User.get_by_id(logged_in.id)
        workspace = workspaces.Workspace.provision(alice, 'analytics', ip='192.0.2.7')
        workspaces.DatabasePassword.rotate(alice, ip='192.0.2.7')
        workspace.remove(ip='192.0.2.7')
        alice.change_handle('alicia', ip='192.0.2.7')
    assert set(sentences(html(client.get('/user/alicia/settings/audit')))) >= {
        'alicia changed their handle from alice to alicia',
        'alice deleted workspace analytics',
        'alice rotated their database password (version 2)',
        'alice created workspace analytics'}


def test_details_show_old_and_new_values_and_escape_what_users_typed(client, logged_in):
    write(logged_in, 'user.update', {'display_name': {'old': None, 'new': '<b>Al</b>'}},
          at=BASE_TIME)
    entry = html(client.get(URL)).select_one('li[data-record]')
    assert entry.select_one('.audit-sentence').find('b') is None
    assert details(entry) == [('Display Name', '(none) → <b>Al</b>')]


DETAILS = [
    ('user.preferences.update', {'communication_community_updates': 'enabled',
                                 'communication_product_updates': 'disabled',
                                 'communication_tips_and_tricks': 'disabled', 'via': 'email'},
     [('Changed with', 'The unsubscribe link in an email'), ('Community Updates', 'On'),
      ('Product Updates', 'Off'), ('Tips & Tricks', 'Off')]),
    ('token.update', {'token_id': 't_1', 'last4': 'a1b2',
                      'status': {'old': 'active', 'new': 'inactive'}},
     [('Status', 'Active → Inactive'), ('Token', 'pst_…a1b2'), ('Token ID', 't_1')]),
    ('user.update', {'handle': {'old': 'alice', 'new': 'alicia'}},
     [('Handle', 'alice → alicia')]),
    ('user.password.rotate', {'version': 3, 'workspaces': 2},
     [('Password version', '3'), ('Workspaces', '2')]),
    ('user.authentication.reset', {'sessions': 2, 'tokens': 1, 'temporary_tokens': 0},
     [('CLI logins revoked', '0'), ('Sessions ended', '2'), ('Tokens revoked', '1')]),
    ('login_token.confirm', {'login_request_id': 'l_1', 'requested_from': '198.51.100.4'},
     [('CLI asked from', '198.51.100.4'), ('Login request ID', 'l_1')]),
    ('login_token.create', {'login_request_id': 'l_1', 'temporary_token_id': 'p_1'},
     [('CLI login token ID', 'p_1'), ('Login request ID', 'l_1')]),
    ('user.login', {'session_id': 's_1'}, [('Session ID', 's_1')]),
    ('workspace.create', {'workspace_id': 'w_1', 'handle': 'analytics'},
     [('Workspace ID', 'w_1'), ('Workspace handle', 'analytics')]),
    ('email.failed', {'kind': 'user.password.rotate', 'code': 550},
     [('Email', 'An email about the rotated database password'),
      ('Mail server answered', '550')]),
    ('workspace.frobnicate', {'some_flag': True}, [('Some flag', 'Yes')]),
]


@pytest.mark.parametrize('action_type,data,expected', DETAILS,
                         ids=[f'{a}-{i}' for i, (a, _, _) in enumerate(DETAILS)])
def test_details_use_the_words_of_the_console(client, logged_in, action_type, data, expected):
    write(logged_in, action_type, data, at=BASE_TIME + datetime.timedelta(days=1))
    entry = html(client.get(URL)).select_one('li[data-record]')
    assert details(entry) == expected
    ids = [dd.get_text() for dd in entry.find_all('dd') if dd.find('code')]
    assert ids == [value for label, value in expected if label.endswith('ID')
                   or label == 'Token']


def test_every_sentence_and_label_is_free_of_internal_names(client, logged_in):
    for i, (action_type, data, _) in enumerate(SENTENCES + DETAILS):
        write(logged_in, action_type, data, at=BASE_TIME + datetime.timedelta(seconds=i))
    page = html(client.get(URL))
    words = ' '.join(sentences(page) + [dt.get_text() for dt in page.find_all('dt')]
                     + [dd.get_text() for dd in page.find_all('dd') if not dd.find('code')])
    assert 'Tips & Tricks' in words
    # What is left once the token names (code) and the unknown action's own name are gone.
    prose = words.replace('pst_…', '').replace('did workspace.frobnicate', '')
    for jargon in ('communication', 'Last4', 'enabled', 'disabled', 'Via', 'token.create',
                   'user.password.rotate', '_'):
        assert jargon not in prose, (jargon, re.findall(rf'\S*{re.escape(jargon)}\S*', prose))


def test_records_of_another_user_are_never_shown(client, logged_in):
    bob = make_user('bob@example.com', 'bob')
    write(bob, 'token.create', {'token_id': 't_b', 'last4': 'bobb'}, at=BASE_TIME)
    mine = write(logged_in, 'token.create', {'token_id': 't_a', 'last4': 'aaaa'},
                 at=BASE_TIME)
    page = html(client.get(URL))
    assert mine in record_ids(page)
    assert 'bob' not in page.find(id='audit-log').get_text()
    exported = client.get(URL + '/export.jsonl').get_data(as_text=True)
    assert {json.loads(line)['identity_handle'] for line in exported.splitlines()} == {'alice'}


def _load_all_with_htmx(client, url):
    """Follow Load more the way htmx does: each answer is rows plus the next Load more row."""
    page = html(client.get(url))
    ids = record_ids(page)
    more = load_more_link(page)
    while more is not None:
        assert more['hx-target'] == '#audit-rows' and more['hx-swap'] == 'beforeend'
        response = client.get(more['hx-get'], headers=MORE)
        assert response.status_code == 200
        fragment = html(response)
        assert fragment.find('ol') is None and fragment.find('h2') is None
        entries = fragment.find_all('li', recursive=False)  # appended to the list as they are
        assert entries and all(entry.has_attr('data-record') for entry in entries)
        ids += record_ids(fragment)
        again = fragment.find(id='audit-more', recursive=False)  # replaced out of band
        assert again.name == 'p' and again['hx-swap-oob'] == 'true'
        more = load_more_link(fragment)
        assert more is None or more.parent is again
        if more is None:
            assert again.get_text(strip=True) == ''
    return ids


def test_load_more_with_htmx_appends_every_record_once_in_order(client, logged_in):
    expected = write_many(logged_in, 120)  # newer than the signup and login records
    ids = _load_all_with_htmx(client, URL)
    assert len(ids) == len(set(ids)) == 122
    assert ids[:120] == expected
    first_page = html(client.get(URL))
    assert len(record_ids(first_page)) == 50
    more = first_page.find('p', id='audit-more')
    assert not more.has_attr('hx-swap-oob')
    assert more.find_previous_sibling('ol')['id'] == 'audit-rows'


def test_load_more_without_javascript_is_a_link_to_a_full_page_of_the_next_records(
        client, logged_in):
    expected = write_many(logged_in, 120)
    seen, url, pages = [], URL, 0
    while url:
        response = client.get(url)
        assert response.status_code == 200
        page = html(response)
        assert page.find('header', id='topbar') is not None
        seen += record_ids(page)
        pages += 1
        more = load_more_link(page)
        url = more['href'] if more else None
        if url:
            assert more['href'] == more['hx-get'] and 'after=' in url
    assert pages == 3
    assert len(seen) == len(set(seen)) == 122
    assert seen[:120] == expected
    assert page.find('a', string='Back to the newest records')['href'] == URL


def test_a_tampered_load_more_link_is_refused(client, logged_in):
    response = client.get(URL + '?after=not-a-cursor')
    assert response.status_code == 400
    assert 'not valid' in html(response).find(attrs={'role': 'alert'}).get_text()


def test_filter_by_action_type_as_a_page_and_with_htmx(client, logged_in):
    created = write_many(logged_in, 60, 'token.create')
    deleted = write(logged_in, 'token.delete', {'token_id': 't', 'last4': 'dddd'},
                    at=BASE_TIME + datetime.timedelta(hours=1))
    page = html(client.get(URL))
    select = page.find('select', id='action_type')
    assert page.find('label', attrs={'for': 'action_type'}).get_text() == 'Action type'
    options = [option['value'] for option in select.find_all('option')]
    assert options[0] == '' and select.find('option').get_text() == 'All'
    assert {'token.create', 'user.login', 'user.authentication.reset',
            'login_token.confirm'} <= set(options)
    form = select.find_parent('form')
    assert form['method'] == 'get' and form['hx-target'] == '#audit-log'

    page = html(client.get(URL + '?action_type=token.delete'))
    assert record_ids(page) == [deleted]
    assert page.find('option', selected=True)['value'] == 'token.delete'

    response = client.get(URL + '?action_type=token.create', headers=FILTER)
    fragment = html(response)
    assert fragment.find('h2') is None and fragment.find('div', id='audit-log') is not None
    assert record_ids(fragment) == created[:50]
    more = load_more_link(fragment)
    assert 'action_type=token.create' in more['hx-get']
    rest = html(client.get(more['hx-get'], headers=MORE))
    assert record_ids(rest) == created[50:]
    assert load_more_link(rest) is None


def test_an_unknown_action_type_filter_shows_all_records(client, logged_in):
    page = html(client.get(URL + '?action_type=nonsense'))
    assert page.find('option', selected=True) is None
    assert len(record_ids(page)) == 2  # signup and login


def test_csv_export_has_every_record_with_spec_field_names(client, logged_in):
    write_many(logged_in, 30)
    with database.db.connection_context():
        models.User.get_by_id(logged_in.id).set_display_name('=HYPERLINK("x")')
    response = client.get(URL + '/export.csv')
    assert response.status_code == 200
    assert response.mimetype == 'text/csv'
    assert response.headers['Cache-Control'] == 'no-store'
    assert response.headers['Content-Disposition'].startswith(
        'attachment; filename="penstock-audit-log-alice-')
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert list(rows[0]) == SPEC_FIELDS
    with database.db.connection_context():
        expected = [r.id for r in models.AuditRecord.select()
                    .where(models.AuditRecord.identity == logged_in.id)
                    .order_by(models.AuditRecord.created_at.desc(),
                              models.AuditRecord.id.desc())]
    assert [row['id'] for row in rows] == expected and len(rows) == 33
    created = next(row for row in rows if row['action_type'] == 'token.create')
    assert json.loads(created['data'])['last4'] == '0029'
    assert created['created_at'] == '2030-01-01T12:00:29.000Z'
    assert created['actor_handle'] == 'alice' and created['actor_ip'] == '192.0.2.7'
    update = next(row for row in rows if row['action_type'] == 'user.update')
    assert update['actor_display_name'] == '\'=HYPERLINK("x")'  # not run as a formula


def test_jsonl_export_streams_every_record_in_batches(client, logged_in, monkeypatch):
    monkeypatch.setattr('views.audit.EXPORT_BATCH', 7)
    expected = write_many(logged_in, 30)
    response = client.get(URL + '/export.jsonl')
    assert response.status_code == 200
    assert response.is_streamed
    assert response.mimetype == 'application/jsonl'
    assert response.headers['Cache-Control'] == 'no-store'
    assert response.headers['Content-Disposition'].endswith('.jsonl"')
    items = [json.loads(line) for line in response.get_data(as_text=True).splitlines()]
    assert [item['id'] for item in items][:30] == expected
    assert len(items) == 32 and len({item['id'] for item in items}) == 32
    assert all(list(item) == SPEC_FIELDS for item in items)
    assert items[0]['data'] == {'token_id': 't_29', 'last4': '0029'}
    assert [item['action_type'] for item in items[30:]] == ['user.login', 'user.signup']
