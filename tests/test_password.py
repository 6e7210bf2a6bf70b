"""Settings → Profile → Database Password: encrypted at rest, masked on the page, rotated
after a confirmation (and a recent login), and each workspace's propagation state, polled."""
import datetime
import json
import os
import socket

import pytest
from cryptography.fernet import Fernet, InvalidToken

import credentials
import database
import models
import workspace_servers
import workspaces
from tests.conftest import ON_POSTGRES, TEST_PASSWORD_KEY, database_dump
from tests.helpers import HTMX, PASSWORD, csrf_token, html, logged_in_as, run_jobs
from views.profile import PROPAGATED, ROTATED

URL = '/user/alice/settings/profile'
SECTION = URL + '/password'
STATUS = SECTION + '/status'
ROTATE = SECTION + '/rotate'
POLL_TRIGGER = 'every 2s'


def open_workspaces(user, *handles):
    with database.db.connection_context():
        return [workspaces.Workspace.provision(user, handle) for handle in handles]


def current_password(user):
    with database.db.connection_context():
        return workspaces.DatabasePassword.for_user(user.id)


def jobs(user):
    """The user's propagation jobs, oldest first: (reason, server, status, attempts)."""
    Job = workspaces.PropagationJob
    with database.db.connection_context():
        return list(Job.select(Job.reason, Job.server, Job.status, Job.attempts)
                    .where(Job.user_id == user.id).order_by(Job.id).tuples())


def rotation_jobs(user):
    return [job for job in jobs(user) if job[0] == 'user.password.rotate']


def rotations(user):
    with database.db.connection_context():
        return list(models.AuditRecord.select()
                    .where(models.AuditRecord.identity == user.id,
                           models.AuditRecord.action_type == 'user.password.rotate'))


def section_of(response):
    section = html(response).find('section', id='database-password')
    assert section is not None
    return section


def states(section_or_fragment):
    """{workspace id: the words its state says}."""
    return {span['id'].removeprefix('password-state-'): span.get_text(' ', strip=True)
            for span in section_or_fragment.find_all(class_='password-state')}


def closed_port():
    """A loopback port nothing listens on (free when asked)."""
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


def poller(soup):
    return soup.find(id='password-poll')


def rotate(client, headers=None):
    return client.post(ROTATE, data={'csrf_token': csrf_token(client, URL)},
                       headers=headers or {})


def make_stale(user):
    """The session's password was typed longer ago than RECENT_LOGIN."""
    long_ago = models.utcnow() - credentials.RECENT_LOGIN - datetime.timedelta(minutes=1)
    with database.db.connection_context():
        credentials.Session.update(authenticated_at=long_ago, created_at=long_ago).where(
            credentials.Session.user == user.id).execute()


# At rest


def database_bytes(app):
    """The SQLite file and its write-ahead log, byte for byte, after a checkpoint; on
    PostgreSQL, whose files are the server's, every row of every table as text."""
    if ON_POSTGRES:
        return database_dump().encode()
    path = app.config['DATABASE_URL'].removeprefix('sqlite:///')
    with database.db.connection_context():
        database.db.execute_sql('PRAGMA wal_checkpoint(FULL)')
    data = b''
    for name in (path, path + '-wal'):
        if os.path.exists(name):
            with open(name, 'rb') as f:
                data += f.read()
    return data


def test_the_password_is_never_in_the_database_file_in_plain_text(app, user):
    first = current_password(user)
    open_workspaces(user, 'analytics')
    with database.db.connection_context():
        second = workspaces.DatabasePassword.rotate(models.User.get_by_id(user.id))

    stored = database_bytes(app)

    assert second.version == 2 and first.password != second.password
    for password in (first.password, second.password):
        assert password.encode() not in stored
        assert password.replace('-', '').encode() not in stored
    assert second.ciphertext.encode() in stored  # the right file was read
    assert Fernet(TEST_PASSWORD_KEY).decrypt(second.ciphertext.encode()).decode() == (
        second.password)


def test_an_old_key_still_decrypts_and_reencrypting_moves_passwords_to_the_new_key(app, user):
    old_key, new_key = TEST_PASSWORD_KEY, Fernet.generate_key().decode()
    plain = current_password(user).password
    try:
        database.use_keys([new_key, old_key])
        assert current_password(user).password == plain
        with database.db.connection_context():
            assert database.reencrypt(workspaces.DatabasePassword.ciphertext) == 1
        ciphertext = current_password(user).ciphertext
        assert Fernet(new_key).decrypt(ciphertext.encode()).decode() == plain

        database.use_keys([old_key])
        with pytest.raises(InvalidToken):
            current_password(user).password
        database.use_keys([new_key])  # the old key retired
        assert current_password(user).password == plain
    finally:
        database.use_keys([old_key])


# The section on Profile


@pytest.mark.parametrize('headers', [None, HTMX], ids=['page', 'htmx'])
def test_profile_shows_each_connection_string_masked_never_the_password(client, logged_in,
                                                                        headers):
    analytics, staging = open_workspaces(logged_in, 'analytics', 'staging')
    password = current_password(logged_in)
    run_jobs()  # their databases are made: Applied

    response = client.get(URL, headers=headers or {})

    assert response.status_code == 200
    assert 'HX-Request' in response.vary
    body = response.get_data(as_text=True)
    assert password.password not in body
    assert password.password.replace('-', '') not in body
    soup = html(response)
    assert (soup.find('header', id='topbar') is None) is bool(headers)
    section = section_of(response)
    assert section.find('h3').get_text(strip=True) == 'Database Password'
    strings = [code.get_text() for code in section.find_all('code', class_='connection-string')]
    assert strings == [workspace.connection_string(password.masked, 'alice')
                       for workspace in (analytics, staging)]
    assert logged_in_as(strings[0].replace(password.masked, password.password)) == (
        'alice', analytics.database_name)
    assert section.find('button', string='Reveal password') is not None
    assert [h.get_text(strip=True) for h in section.find_all('h4')] == ['analytics', 'staging']
    shown = states(section)
    assert set(shown) == {analytics.id, staging.id}
    assert all(words.startswith('Applied ') and words.endswith(' UTC')
               for words in shown.values())
    assert section.find(id=f'password-state-{analytics.id}').find('time')['datetime'].endswith(
        'Z')
    assert poller(section) is not None and not poller(section).has_attr('hx-trigger')
    assert section.find('button', string='Rotate Password').find_parent('form')['method'] == 'get'


def test_without_workspaces_the_section_says_so_and_links_to_the_home_page(client, logged_in):
    section = section_of(client.get(URL))
    assert 'You have no workspaces yet' in section.get_text()
    assert section.find('a', string='Create a workspace')['href'] == '/'
    assert section.find('button', string='Rotate Password') is not None


def test_the_section_url_is_the_profile_page_or_the_section_for_htmx(client, logged_in):
    page = client.get(SECTION)
    assert page.status_code == 200
    assert html(page).find('h2', id='panel-heading').get_text() == 'Profile'
    fragment = html(client.get(SECTION, headers=HTMX))
    assert fragment.find('h2') is None
    assert fragment.find('section', id='database-password') is not None
    assert fragment.find('button', string='Rotate Password').has_attr('autofocus')


# Reveal password and Hide password on Profile stay on Profile

def connections_of(soup):
    """{workspace id: (the connection string's text, its Reveal or Hide form)}."""
    return {div['id'].removeprefix('connection-'):
            (div.find('code', class_='connection-string').get_text(), div.find('form'))
            for div in soup.find_all('div', class_='connection')}


def test_reveal_without_javascript_shows_the_profile_page_with_that_password(client,
                                                                             logged_in):
    analytics, staging = open_workspaces(logged_in, 'analytics', 'staging')
    password = current_password(logged_in)
    reveal = URL + f'/password/workspaces/{analytics.id}'
    [form] = [form for _, form in connections_of(section_of(client.get(URL))).values()
              if form['action'] == reveal]
    assert form['method'] == 'post' and form['hx-post'] == reveal
    assert form.find('button').get_text(strip=True) == 'Reveal password'

    response = client.post(reveal, data={'csrf_token': csrf_token(client, URL)})

    assert response.status_code == 200, 'rendered directly: the password never goes in a URL'
    assert 'Location' not in response.headers
    assert response.headers['Cache-Control'] == 'no-store'
    page = html(response)
    assert page.find('h2', id='panel-heading').get_text() == 'Profile'
    shown = connections_of(section_of(response))
    text, hide = shown[analytics.id]
    assert text == analytics.connection_string(password.password, 'alice')
    assert hide['method'] == 'get' and hide['action'] == hide['hx-get'] == reveal
    assert hide.find('button').get_text(strip=True) == 'Hide password'
    assert page.find(id=f'connection-{analytics.id}')['hx-history'] == 'false'
    assert password.password not in shown[staging.id][0], 'only the one asked for'
    assert shown[staging.id][1]['action'] == URL + f'/password/workspaces/{staging.id}'

    hidden = client.get(reveal)
    assert hidden.status_code == 303
    assert hidden.headers['Location'] == f'{URL}#connection-{analytics.id}'
    assert password.password not in client.get(URL).get_data(as_text=True)


def test_reveal_and_hide_on_profile_for_htmx_swap_the_string_and_keep_profile_urls(
        client, logged_in):
    [analytics] = open_workspaces(logged_in, 'analytics')
    password = current_password(logged_in)
    reveal = URL + f'/password/workspaces/{analytics.id}'
    response = client.post(reveal, data={'csrf_token': csrf_token(client, URL)}, headers=HTMX)
    assert response.status_code == 200
    fragment = html(response)
    assert fragment.find('h2') is None and fragment.find('header') is None
    text, hide = connections_of(fragment)[analytics.id]
    assert text == analytics.connection_string(password.password, 'alice')
    assert hide['hx-get'] == reveal and hide['hx-target'] == f'#connection-{analytics.id}'

    hidden = client.get(reveal, headers=HTMX)
    assert hidden.status_code == 200
    assert password.password not in hidden.get_data(as_text=True)
    text, form = connections_of(html(hidden))[analytics.id]
    assert text == analytics.connection_string(password.masked, 'alice')
    assert form['hx-post'] == reveal and form.find('button').has_attr('autofocus')


def test_profile_reveal_of_another_users_workspace_is_404(client, logged_in, other_user):
    [theirs] = open_workspaces(other_user, 'prod')
    token = csrf_token(client, URL)
    for url in (URL + f'/password/workspaces/{theirs.id}',
                URL + '/password/workspaces/w_nosuchworkspace0000',
                f'/user/bob/settings/profile/password/workspaces/{theirs.id}'):
        for headers in ({}, HTMX):
            for method in ('GET', 'POST'):
                response = client.open(url, method=method, data={'csrf_token': token},
                                       headers=headers)
                assert response.status_code == 404, (url, method)
                assert current_password(other_user).password not in response.get_data(
                    as_text=True)


def test_profile_reveal_needs_the_csrf_token(client, logged_in):
    [analytics] = open_workspaces(logged_in, 'analytics')
    password = current_password(logged_in)
    for headers in ({}, HTMX, {'X-CSRFToken': 'forged'}):
        response = client.post(URL + f'/password/workspaces/{analytics.id}', headers=headers)
        assert response.status_code == 400
        assert password.password not in response.get_data(as_text=True)


def test_another_users_password_pages_are_404_and_their_password_is_untouched(
        client, logged_in, other_user):
    open_workspaces(other_user, 'prod')
    bobs = jobs(other_user)  # the one that makes the database
    token = csrf_token(client, URL)
    for url in (SECTION, STATUS, ROTATE):
        assert client.get(url.replace('/alice/', '/bob/')).status_code == 404
    response = client.post(ROTATE.replace('/alice/', '/bob/'), data={'csrf_token': token})
    assert response.status_code == 404
    assert current_password(other_user).version == 1 and jobs(other_user) == bobs


def test_the_password_pages_need_login(client, user):
    for url in (SECTION, STATUS, ROTATE):
        response = client.get(url)
        assert response.status_code == 302
        assert response.headers['Location'] == f'/login?next={url}'


# Rotate Password


def test_rotate_without_javascript_asks_first_on_the_profile_page(client, logged_in):
    open_workspaces(logged_in, 'analytics')
    before = jobs(logged_in)

    response = client.get(ROTATE)

    assert response.status_code == 200
    page = html(response)
    assert page.find('header', id='topbar') is not None
    section = section_of(response)
    question = section.find(id='rotate-password-question').get_text(' ', strip=True)
    assert 'A new password replaces the current one' in question
    assert 'It may take a couple of minutes to reach every workspace.' in question
    assert ('Existing connections are not terminated, unless you tick Also end open '
            'connections.') in question
    form = section.find(class_='confirm-box').find('form', method='post')
    assert form['action'] == ROTATE
    assert form.find('input', attrs={'name': 'csrf_token'}) is not None
    assert form.find('button').get_text(strip=True) == 'Rotate Password'
    assert section.find('a', string='Cancel')['href'] == URL + '#database-password'
    assert current_password(logged_in).version == 1 and jobs(logged_in) == before


def test_rotate_with_htmx_asks_first_in_place_and_cancel_puts_the_button_back(client,
                                                                              logged_in):
    fragment = html(client.get(ROTATE, headers=HTMX))

    assert fragment.find('h2') is None and fragment.find('header') is None
    section = fragment.find('section', id='database-password')
    assert section.find(attrs={'autofocus': True})['id'] == 'rotate-password-question'
    form = section.find(class_='confirm-box').find('form', method='post')
    assert form['hx-post'] == ROTATE and form['hx-target'] == '#database-password'
    cancel = section.find('a', string='Cancel')
    assert cancel['hx-get'] == SECTION and cancel['hx-target'] == '#database-password'

    back = html(client.get(cancel['hx-get'], headers=HTMX))
    button = back.find('section', id='database-password').find('button', string='Rotate Password')
    assert button.has_attr('autofocus') and button.find_parent('form')['method'] == 'get'
    assert current_password(logged_in).version == 1


def test_rotating_makes_a_pending_job_per_server_and_audits_without_the_password(
        client, logged_in):
    """One job brings the user's role on a server up to date, for all their workspaces
    there."""
    analytics, staging = open_workspaces(logged_in, 'analytics', 'staging')
    old = current_password(logged_in)

    response = rotate(client)

    assert response.status_code == 303
    assert response.headers['Location'] == URL + '#database-password'
    new = current_password(logged_in)
    assert new.version == 2 and new.password != old.password and new.id != old.id
    assert analytics.server == staging.server
    assert rotation_jobs(logged_in) == [
        ('user.password.rotate', analytics.server, 'pending', 0)]
    [record] = rotations(logged_in)
    assert json.loads(record.data) == {'version': 2, 'workspaces': 2}
    for password in (old.password, new.password):
        assert password not in record.data

    page = client.get(URL)
    assert html(page).find(id='flash').get_text(strip=True) == ROTATED
    section = section_of(page)
    assert states(section) == {analytics.id: 'Pending', staging.id: 'Pending'}
    assert poller(section)['hx-trigger'] == POLL_TRIGGER
    assert poller(section)['hx-get'] == STATUS
    assert new.password not in page.get_data(as_text=True)


def test_rotating_with_htmx_swaps_in_the_section_with_every_workspace_pending(client,
                                                                              logged_in):
    analytics, staging = open_workspaces(logged_in, 'analytics', 'staging')

    response = rotate(client, HTMX)

    assert response.status_code == 200
    fragment = html(response)
    section = fragment.find('section', id='database-password')
    assert fragment.find('h2') is None
    assert section.find('h3').has_attr('autofocus')
    assert states(section) == {analytics.id: 'Pending', staging.id: 'Pending'}
    assert poller(section)['hx-trigger'] == POLL_TRIGGER
    assert section.find('button', string='Rotate Password').find_parent('form')['method'] == 'get'
    flash = fragment.find(id='flash')
    assert flash['hx-swap-oob'] == 'innerHTML' and flash.get_text(strip=True) == ROTATED
    assert current_password(logged_in).version == 2 and len(rotation_jobs(logged_in)) == 1
    assert current_password(logged_in).password not in response.get_data(as_text=True)


def test_rotating_without_workspaces_makes_no_jobs(client, logged_in):
    assert rotate(client).status_code == 303
    assert current_password(logged_in).version == 2 and jobs(logged_in) == []
    [record] = rotations(logged_in)
    assert json.loads(record.data) == {'version': 2, 'workspaces': 0}


def test_the_state_goes_from_pending_to_applied_and_the_polling_stops(client, logged_in):
    analytics, staging = open_workspaces(logged_in, 'analytics', 'staging')
    rotate(client, HTMX)

    pending = client.get(STATUS, headers=HTMX)
    assert pending.status_code == 200 and 'HX-Request' in pending.vary
    fragment = html(pending)
    assert poller(fragment)['hx-trigger'] == POLL_TRIGGER
    assert poller(fragment)['hx-swap'] == 'outerHTML'
    assert states(fragment) == {analytics.id: 'Pending', staging.id: 'Pending'}
    assert {span['hx-swap-oob'] for span in fragment.find_all(class_='password-state')} == {
        'true'}
    assert fragment.find(id='flash') is None  # the live region hears nothing while it waits

    run_jobs()

    applied = html(client.get(STATUS, headers=HTMX))
    assert poller(applied) is not None and not poller(applied).has_attr('hx-trigger')
    shown = states(applied)
    assert set(shown) == {analytics.id, staging.id}
    assert all(words.startswith('Applied ') for words in shown.values())
    flash = applied.find(id='flash')
    assert flash['hx-swap-oob'] == 'innerHTML' and flash.get_text(strip=True) == PROPAGATED
    assert {status for _, _, status, _ in jobs(logged_in)} == {'applied'}

    section = section_of(client.get(URL))  # without JavaScript: a reload shows it
    assert all(words.startswith('Applied ') for words in states(section).values())
    assert section.find(attrs={'hx-trigger': True}) is None


def test_one_workspace_applied_and_one_pending_keeps_the_polling_going(client, logged_in):
    """Staging's server does not answer (nothing listens at its address): its job stays
    pending while analytics's server applies the password."""
    analytics, staging = open_workspaces(logged_in, 'analytics', 'staging')
    down = workspace_servers.Server(f'postgresql://penstock@127.0.0.1:{closed_port()}/postgres')
    with database.db.connection_context():
        workspaces.Workspace.update(server=down.key).where(
            workspaces.Workspace.id == staging.id).execute()
    rotate(client)
    servers = workspace_servers.Servers([*models.Config.workspace_servers, down])
    # One converge on analytics's server (both creations and the rotation), one attempt on
    # staging's.
    assert run_jobs(servers) == 2
    assert sorted(job[1:3] for job in rotation_jobs(logged_in)) == sorted(
        [(analytics.server, 'applied'), (down.key, 'pending')])

    fragment = html(client.get(STATUS, headers=HTMX))

    shown = states(fragment)
    assert sorted(words.split()[0] for words in shown.values()) == ['Applied', 'Pending']
    assert poller(fragment)['hx-trigger'] == POLL_TRIGGER
    assert fragment.find(id='flash') is None


def test_the_status_url_without_htmx_is_the_profile_page(client, logged_in):
    open_workspaces(logged_in, 'analytics')
    rotate(client)
    response = client.get(STATUS)
    assert response.status_code == 200
    assert html(response).find('h2', id='panel-heading').get_text() == 'Profile'
    assert list(states(section_of(response)).values()) == ['Pending']


def test_rotating_without_the_csrf_token_changes_nothing(client, logged_in):
    open_workspaces(logged_in, 'analytics')
    before = jobs(logged_in)
    response = client.post(ROTATE)
    assert response.status_code == 400
    assert current_password(logged_in).version == 1
    assert jobs(logged_in) == before and rotations(logged_in) == []


# Re-authentication


def test_a_stale_session_is_asked_for_its_password_before_the_confirmation(client, logged_in):
    make_stale(logged_in)

    response = client.get(ROTATE)
    assert response.status_code == 303
    assert response.headers['Location'] == f'/reauth?next={ROTATE}'

    htmx = client.get(ROTATE, headers=HTMX)
    assert htmx.status_code == 204
    assert htmx.headers['HX-Redirect'] == f'/reauth?next={ROTATE}'


def test_a_stale_session_cannot_rotate_until_the_right_password_is_typed(client, logged_in):
    open_workspaces(logged_in, 'analytics')
    before = jobs(logged_in)
    token = csrf_token(client, URL)
    make_stale(logged_in)

    refused = client.post(ROTATE, data={'csrf_token': token}, headers={'Referer': URL})
    assert refused.status_code == 303
    assert refused.headers['Location'] == f'/reauth?next={URL}'
    assert current_password(logged_in).version == 1

    wrong = client.post('/reauth', data={'password': 'not the password', 'next': ROTATE,
                                         'csrf_token': token})
    assert wrong.status_code == 401
    assert html(wrong).find(id='password-error').get_text(strip=True) == (
        'That password is not right. Try again.')
    assert client.get(ROTATE).headers['Location'] == f'/reauth?next={ROTATE}'
    assert current_password(logged_in).version == 1
    assert jobs(logged_in) == before and rotations(logged_in) == []

    right = client.post('/reauth', data={'password': PASSWORD, 'next': ROTATE,
                                         'csrf_token': token})
    assert right.status_code == 303 and right.headers['Location'] == ROTATE
    confirm = client.get(ROTATE)
    assert confirm.status_code == 200
    assert section_of(confirm).find(id='rotate-password-question') is not None
    assert rotate(client).status_code == 303
    assert current_password(logged_in).version == 2 and len(rotation_jobs(logged_in)) == 1
