"""CLI login: the verify page, the login-token API, and cli.py end to end against a live server."""
import datetime
import json
import os
import re
import stat
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

import credentials
import database
import models
from tests.helpers import (
    HTMX,
    PASSWORD,
    csrf_token,
    html,
    log_in,
    make_stale,
    make_user,
    reauth_next,
    reauthenticate,
)

CLI = Path(__file__).resolve().parents[1] / 'cli.py'
API = '/api/v0/login/token'
CODE_HINT = "Expires in 15 minutes. Don't share this code with anyone."


def start(client, ip='203.0.113.9'):
    response = client.post(API, environ_base={'REMOTE_ADDR': ip})
    assert response.status_code == 201
    return response.get_json()


def session_headers(client):
    return {'X-CSRFToken': csrf_token(client, '/user/alice/settings/profile')}


def confirm(client, request_id):
    response = client.patch(f'{API}/{request_id}', headers=session_headers(client))
    assert response.status_code == 200, response.get_json()
    return response.get_json()['code']


def stored(request_id):
    with database.db.connection_context():
        return credentials.LoginRequest.get_or_none(credentials.LoginRequest.id == request_id)


def expire(request_id):
    with database.db.connection_context():
        (credentials.LoginRequest.update(expires_at=models.utcnow() - datetime.timedelta(seconds=1))
         .where(credentials.LoginRequest.id == request_id).execute())


def audited(user, action_type):
    with database.db.connection_context():
        return [record for record in models.AuditRecord.select()
                .where((models.AuditRecord.identity == user.id)
                       & (models.AuditRecord.action_type == action_type))]


def wrong(code):
    return f'{(int(code) + 1) % 10 ** 6:06d}'


# The API ------------------------------------------------------------------------------------

def test_starting_a_request_needs_no_login_and_answers_with_the_url_to_open(client, user):
    body = start(client)
    assert set(body) == {'id', 'status', 'created_at', 'expires_at', 'url'}
    assert body['status'] == 'pending'
    assert body['url'] == f'http://localhost/login/token?r={body["id"]}'
    created = datetime.datetime.fromisoformat(body['created_at'].rstrip('Z'))
    expires = datetime.datetime.fromisoformat(body['expires_at'].rstrip('Z'))
    assert expires - created == datetime.timedelta(minutes=15)
    row = stored(body['id'])
    assert row.status == 'pending' and row.ip == '203.0.113.9' and row.user_id is None


def test_starting_a_request_refuses_unknown_body_fields(client):
    response = client.post(API, json={'handle': 'alice'})
    assert response.status_code == 400
    assert response.get_json()['validation_errors'] == [
        {'location': 'body.handle', 'message': 'unknown field'}]
    with database.db.connection_context():
        assert credentials.LoginRequest.select().count() == 0


@pytest.mark.parametrize('body', [b'[' * 50_000, b'{"a":' * 50_000, b'\xff', b'{"x": NaN}',
                                  b'{"x": "\\udc80"}'],
                         ids=['deep-arrays', 'deep-objects', 'not-utf-8', 'nan', 'surrogate'])
def test_starting_a_request_with_a_malformed_body_is_a_400(client, body):
    response = client.post(API, data=body, content_type='application/json')
    assert response.status_code == 400
    [error] = response.get_json()['validation_errors']
    assert error['location'] in ('body', 'body.x')
    with database.db.connection_context():
        assert credentials.LoginRequest.select().count() == 0


def test_verifying_needs_a_browser_session_and_its_csrf_token(client, user):
    request_id = start(client)['id']
    response = client.patch(f'{API}/{request_id}')
    assert response.status_code == 401 and response.get_json()['status'] == 401
    log_in(client, 'alice')
    response = client.patch(f'{API}/{request_id}')
    assert response.status_code == 400
    assert response.get_json()['validation_errors'][0]['location'] == 'header.X-CSRFToken'
    assert stored(request_id).status == 'pending'


def test_verify_then_exchange_gives_one_temporary_token(client, logged_in):
    request_id = start(client)['id']
    response = client.patch(f'{API}/{request_id}', headers=session_headers(client))
    assert response.status_code == 200
    assert response.headers['Cache-Control'] == 'no-store'
    body = response.get_json()
    assert body['id'] == request_id and body['status'] == 'confirmed'
    assert re.fullmatch(r'[0-9]{6}', body['code'])
    assert len(audited(logged_in, 'login_token.confirm')) == 1

    response = client.get(f'{API}/{request_id}?code={body["code"]}')
    assert response.status_code == 200
    assert response.headers['Cache-Control'] == 'no-store'
    token = response.get_json()
    assert credentials.Token.prefix_of(token['token']) == 'pstt_'
    expires = datetime.datetime.fromisoformat(token['expires_at'].rstrip('Z'))
    assert abs(expires - models.utcnow() - datetime.timedelta(days=30)) < \
        datetime.timedelta(minutes=1)
    actor = client.get('/api/v0/actor', headers={'Authorization': f'Bearer {token["token"]}'})
    assert actor.get_json()['handle'] == 'alice'
    assert len(audited(logged_in, 'login_token.create')) == 1
    with database.db.connection_context():
        assert credentials.TemporaryToken.select().where(
            credentials.TemporaryToken.token_hash == token['token']).count() == 0  # hashed

    again = client.get(f'{API}/{request_id}?code={body["code"]}')
    assert again.status_code == 404  # used: never a second token
    assert again.get_json()['title'] == 'Not Found'


def test_a_request_can_be_verified_only_once(client, logged_in):
    request_id = start(client)['id']
    confirm(client, request_id)
    response = client.patch(f'{API}/{request_id}', headers=session_headers(client))
    assert response.status_code == 409


def test_an_unverified_request_cannot_be_exchanged_and_the_try_does_not_count(client, user):
    request_id = start(client)['id']
    response = client.get(f'{API}/{request_id}?code=123456')
    assert response.status_code == 409
    assert 'not been verified' in response.get_json()['detail']
    assert stored(request_id).attempts == 0


@pytest.mark.parametrize('code', ['', '12345', '1234567', 'abcdef'])
def test_a_malformed_code_is_a_400_that_does_not_use_an_attempt(client, logged_in, code):
    request_id = start(client)['id']
    confirm(client, request_id)
    response = client.get(f'{API}/{request_id}', query_string={'code': code})
    assert response.status_code == 400
    assert response.get_json()['validation_errors'] == [
        {'location': 'query.code', 'message': 'must be 6 digits'}]
    assert stored(request_id).attempts == 0


def test_three_wrong_codes_end_the_request(client, logged_in):
    request_id = start(client)['id']
    code = confirm(client, request_id)
    details = []
    for _ in range(3):
        response = client.get(f'{API}/{request_id}?code={wrong(code)}')
        assert response.status_code == 400
        details.append(response.get_json())
    assert '2 attempts left' in details[0]['detail']
    assert '1 attempt left' in details[1]['detail']
    assert 'ended' in details[2]['detail']
    assert details[2]['validation_errors'][0]['message'] == 'wrong code; no attempts left'
    assert client.get(f'{API}/{request_id}?code={code}').status_code == 404
    assert stored(request_id).status == 'failed'
    with database.db.connection_context():
        assert credentials.TemporaryToken.select().count() == 0


def test_an_expired_request_can_never_issue_a_token(client, logged_in):
    request_id = start(client)['id']
    code = confirm(client, request_id)
    expire(request_id)
    assert client.get(f'{API}/{request_id}?code={code}').status_code == 404
    pending = start(client)['id']
    expire(pending)
    assert client.patch(f'{API}/{pending}', headers=session_headers(client)).status_code == 404


def test_declining_through_the_api_deletes_the_request(client, logged_in):
    request_id = start(client)['id']
    headers = session_headers(client)
    assert client.delete(f'{API}/{request_id}').status_code == 400  # no CSRF token
    response = client.delete(f'{API}/{request_id}', headers=headers)
    assert response.status_code == 204 and response.get_data() == b''
    assert stored(request_id) is None
    assert len(audited(logged_in, 'login_token.decline')) == 1
    assert client.delete(f'{API}/{request_id}', headers=headers).status_code == 404
    assert client.get(f'{API}/{request_id}?code=123456').status_code == 404


def test_another_users_verified_request_is_404_to_everyone_else(app, client, logged_in,
                                                                other_user):
    request_id = start(client)['id']
    confirm(client, request_id)
    bob = app.test_client()
    log_in(bob, 'bob')
    headers = {'X-CSRFToken': csrf_token(bob, '/user/bob/settings/profile')}
    assert bob.patch(f'{API}/{request_id}', headers=headers).status_code == 404
    assert bob.delete(f'{API}/{request_id}', headers=headers).status_code == 404
    assert bob.get(f'/login/token?r={request_id}').status_code == 404
    assert stored(request_id).status == 'confirmed'


def test_the_api_refuses_to_verify_for_a_stale_session_and_says_where_to_confirm(
        client, logged_in):
    request_id = start(client)['id']
    make_stale(logged_in)
    response = client.patch(f'{API}/{request_id}', headers=session_headers(client))
    assert response.status_code == 403
    body = response.get_json()
    assert body['title'] == 'Forbidden' and 'code' not in body
    assert f'/reauth?next=/login/token?r%3D{request_id}' in body['detail']
    row = stored(request_id)
    assert row.status == 'pending' and row.user_id is None
    assert audited(logged_in, 'login_token.confirm') == []


def test_starting_a_request_deletes_the_expired_ones(client, logged_in):
    expired_pending, expired_confirmed, live = (start(client)['id'] for _ in range(3))
    confirm(client, expired_confirmed)
    expire(expired_pending)
    expire(expired_confirmed)
    assert stored(expired_pending) is not None  # kept until the next start sweeps
    newest = start(client)['id']
    assert stored(expired_pending) is None and stored(expired_confirmed) is None
    assert stored(live).status == 'pending' and stored(newest).status == 'pending'


# Only the user who answers a request in the browser can touch it -----------------------------

def bob_client(app):
    bob = app.test_client()
    log_in(bob, 'bob')
    return bob, csrf_token(bob, '/user/bob/settings/profile')


def test_a_request_alice_opened_is_404_to_bob_and_he_changes_nothing(app, client, logged_in,
                                                                     other_user):
    request_id = start(client)['id']
    assert client.get(f'/login/token?r={request_id}').status_code == 200
    bob, token = bob_client(app)

    assert bob.post(f'/login/token/{request_id}/decline',
                    data={'csrf_token': token}).status_code == 404
    assert bob.post(f'/login/token/{request_id}/verify',
                    data={'csrf_token': token}).status_code == 404
    assert bob.delete(f'{API}/{request_id}', headers={'X-CSRFToken': token}).status_code == 404
    assert bob.patch(f'{API}/{request_id}', headers={'X-CSRFToken': token}).status_code == 404
    assert bob.get(f'/login/token?r={request_id}').status_code == 404

    row = stored(request_id)
    assert row.status == 'pending' and row.user_id == logged_in.id and row.attempts == 0
    with database.db.connection_context():
        assert models.AuditRecord.select().where(
            models.AuditRecord.identity == other_user.id,
            models.AuditRecord.action_type.startswith('login_token.')).count() == 0
    code = confirm(client, request_id)  # alice can still answer it, and the CLI log in
    assert client.get(f'{API}/{request_id}?code={code}').status_code == 200


def test_when_users_race_to_open_a_request_exactly_one_gets_it(app, server, client):
    cookie_name = app.config['SESSION_COOKIE_NAME']
    racers = {}
    for number in range(6):
        handle = f'racer{number}'
        make_user(f'{handle}@example.com', handle)
        browser = app.test_client()
        assert log_in(browser, handle).status_code == 302
        racers[handle] = f'{cookie_name}={browser.get_cookie(cookie_name).value}'
    request_id = start(client)['id']
    go = threading.Barrier(len(racers), timeout=30)

    def open_page(cookie):
        go.wait()  # all at once, each with its own session
        request = urllib.request.Request(f'{server}/login/token?r={request_id}',
                                         headers={'Cookie': cookie})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status
        except urllib.error.HTTPError as error:
            with error:
                return error.code

    with ThreadPoolExecutor(max_workers=len(racers)) as pool:
        statuses = dict(zip(racers, pool.map(open_page, racers.values())))
    assert sorted(statuses.values()) == [200] + [404] * (len(racers) - 1), statuses
    [winner] = [handle for handle, status in statuses.items() if status == 200]
    with database.db.connection_context():
        assert stored(request_id).user_id == models.User.get(models.User.handle == winner).id


# Verifying needs the password typed recently ------------------------------------------------

def test_a_stale_session_is_asked_for_the_password_before_the_verify_page(client, logged_in):
    request_id = start(client)['id']
    page = f'/login/token?r={request_id}'
    make_stale(logged_in)
    response = client.get(page)
    assert response.status_code == 303
    assert reauth_next(response.headers['Location']) == page
    assert stored(request_id).user_id is None  # not answered by anyone yet


@pytest.mark.parametrize('htmx', [False, True], ids=['page', 'htmx'])
def test_verify_in_a_stale_session_asks_for_the_password_and_confirms_nothing(
        client, logged_in, htmx):
    request_id = start(client)['id']
    page = f'/login/token?r={request_id}'
    token = csrf_token(client, page)
    make_stale(logged_in)  # the password grew old while the page was open
    here = 'http://localhost' + page
    response = client.post(f'/login/token/{request_id}/verify', data={'csrf_token': token},
                           headers={**HTMX, 'HX-Current-URL': here} if htmx
                           else {'Referer': here})
    if htmx:
        assert response.status_code == 204
        assert reauth_next(response.headers['HX-Redirect']) == page
    else:
        assert response.status_code == 303
        assert reauth_next(response.headers['Location']) == page
    assert stored(request_id).status == 'pending'
    assert audited(logged_in, 'login_token.confirm') == []


def test_after_confirming_the_password_the_verify_page_is_back_and_verify_works(client,
                                                                                logged_in):
    request_id = start(client)['id']
    page = f'/login/token?r={request_id}'
    make_stale(logged_in)
    back = reauthenticate(client, client.get(page).headers['Location'], PASSWORD)
    assert back.status_code == 303 and back.headers['Location'] == page
    verify = html(client.get(page)).find('button', string='Verify').find_parent('form')
    response = client.post(verify['action'], data={
        'csrf_token': verify.find('input', attrs={'name': 'csrf_token'})['value']})
    assert response.status_code == 200
    code = html(response).find('input', id='login-code')['value']
    assert client.get(f'{API}/{request_id}?code={code}').status_code == 200


# The browser page ---------------------------------------------------------------------------

def test_the_verify_page_needs_login_and_leads_back(client, user):
    request_id = start(client)['id']
    page = f'/login/token?r={request_id}'
    response = client.get(page)
    assert response.status_code == 302
    location = urlsplit(response.headers['Location'])
    assert location.path == '/login' and parse_qs(location.query)['next'] == [page]
    response = client.post('/login', data={
        'email': 'alice', 'password': 'correct horse battery', 'next': page,
        'csrf_token': csrf_token(client, '/login')})
    assert response.headers['Location'] == page


def test_signing_up_from_the_verify_link_comes_back_to_the_verify_page(client):
    """A new user sent to log in by a CLI login link follows Sign up, and after signing up is
    on the verify page, not the console home (SPEC §13)."""
    request_id = start(client)['id']
    page = f'/login/token?r={request_id}'
    login_page = html(client.get(client.get(page).headers['Location']))
    assert login_page.find('p', string='Log in to verify the CLI login request.') is not None
    signup_link = login_page.find('a', string='Sign up')['href']
    assert urlsplit(signup_link).path == '/signup'
    assert parse_qs(urlsplit(signup_link).query)['next'] == [page]

    signup_page = html(client.get(signup_link))
    assert signup_page.find('p', string='Sign up to verify the CLI login request.') is not None
    form = signup_page.find('form', action='/signup')
    fields = {field['name']: field.get('value', '') for field in form.find_all('input')}
    assert fields['next'] == page
    fields.update(email='carol@example.com', handle='carol', password=PASSWORD)
    response = client.post('/signup', data=fields)
    assert response.status_code == 302 and response.headers['Location'] == page

    verify = html(client.get(page))
    assert verify.find('h1').get_text() == 'Verify login request'
    assert verify.find('button', string='Verify') is not None
    row = stored(request_id)
    assert row.status == 'pending' and row.user_id is not None
    with database.db.connection_context():
        assert models.User.get_by_id(row.user_id).handle == 'carol'


def test_the_verify_page_names_the_ip_and_handle_and_offers_verify_and_decline(
        client, logged_in):
    request_id = start(client, ip='198.51.100.77')['id']
    response = client.get(f'/login/token?r={request_id}')
    assert response.status_code == 200
    assert response.headers['Cache-Control'] == 'no-store'
    page = html(response)
    assert page.find('h1').get_text() == 'Verify login request'
    text = page.find(id='login-request').get_text()
    assert '198.51.100.77' in text and 'alice' in text
    verify = page.find('button', string='Verify').find_parent('form')
    decline = page.find('button', string='Decline').find_parent('form')
    assert verify['method'] == decline['method'] == 'post'
    assert verify['action'] == f'/login/token/{request_id}/verify'
    assert decline['action'] == f'/login/token/{request_id}/decline'
    assert verify.find('input', attrs={'name': 'csrf_token'}) is not None
    row = stored(request_id)
    assert row.status == 'pending'  # looking verifies nothing…
    assert row.user_id == logged_in.id  # …but makes alice the one who answers it


def test_verify_without_javascript_shows_the_code_once_and_never_in_a_url(client, logged_in):
    request_id = start(client)['id']
    token = csrf_token(client, f'/login/token?r={request_id}')
    response = client.post(f'/login/token/{request_id}/verify', data={'csrf_token': token})
    assert response.status_code == 200  # shown in the answer, not via a redirect
    assert response.headers['Cache-Control'] == 'no-store'
    page = html(response)
    assert page.find('h1').get_text() == 'Verify login request'
    field = page.find('input', id='login-code')
    code = field['value']
    assert re.fullmatch(r'[0-9]{6}', code) and field.has_attr('readonly')
    assert page.find('label', attrs={'for': 'login-code'}) is not None
    assert page.find('button', attrs={'data-copy': 'login-code'}).get_text() == 'Copy'
    assert page.find(id='login-code-hint').get_text() == CODE_HINT
    assert all(code not in (tag.get('href', '') + tag.get('action', '') + tag.get('src', ''))
               for tag in page.find_all(True))
    assert stored(request_id).status == 'confirmed'

    again = client.post(f'/login/token/{request_id}/verify', data={'csrf_token': token})
    assert again.status_code == 409
    assert html(again).find('input', id='login-code') is None
    assert client.get(f'{API}/{request_id}?code={code}').status_code == 200


def test_verify_with_htmx_swaps_in_the_code_fragment(client, logged_in):
    request_id = start(client)['id']
    token = csrf_token(client, f'/login/token?r={request_id}')
    response = client.post(f'/login/token/{request_id}/verify',
                           headers={**HTMX, 'X-CSRFToken': token})
    assert response.status_code == 200
    assert response.headers['Cache-Control'] == 'no-store'
    fragment = html(response)
    assert fragment.find('h1') is None
    box = fragment.find(id='login-request')
    assert box['hx-history'] == 'false'
    assert re.fullmatch(r'[0-9]{6}', box.find('input', id='login-code')['value'])


def test_decline_deletes_the_request_and_says_so(client, logged_in):
    request_id = start(client, ip='198.51.100.8')['id']
    token = csrf_token(client, f'/login/token?r={request_id}')
    response = client.post(f'/login/token/{request_id}/decline', data={'csrf_token': token})
    assert response.status_code == 200
    status = html(response).find(id='login-request').find('p', attrs={'role': 'status'})
    assert status.get_text().startswith('Login request declined.')
    assert '198.51.100.8' in status.get_text()
    assert stored(request_id) is None
    assert client.get(f'/login/token?r={request_id}').status_code == 404


@pytest.mark.parametrize('how', ['unknown', 'expired', 'used', 'missing'])
def test_an_unknown_expired_or_used_request_is_a_clear_404_page(client, logged_in, how):
    request_id = start(client)['id']
    if how == 'unknown':
        request_id = 'l_doesnotexist'
    elif how == 'expired':
        expire(request_id)
    elif how == 'used':
        code = confirm(client, request_id)
        assert client.get(f'{API}/{request_id}?code={code}').status_code == 200
    url = '/login/token' if how == 'missing' else f'/login/token?r={request_id}'
    response = client.get(url)
    assert response.status_code == 404
    page = html(response)
    assert page.find('h1').get_text() == 'Login request not found'
    assert 'has expired' in page.find(attrs={'role': 'alert'}).get_text()
    if how != 'missing':
        token = csrf_token(client, '/user/alice/settings/profile')
        for action in ('verify', 'decline'):
            assert client.post(f'/login/token/{request_id}/{action}',
                               data={'csrf_token': token}).status_code == 404


# cli.py against a live server ---------------------------------------------------------------

def cli(*args, env=None, stdin=''):
    return subprocess.run([sys.executable, str(CLI), *args], input=stdin, capture_output=True,
                          text=True, timeout=60, env={**os.environ, **(env or {})})


class Login:
    """`cli.py login` running: it prints the URL, then waits for codes on stdin."""

    def __init__(self, server, config_dir, env=None):
        args = [sys.executable, '-u', str(CLI), 'login', '--host', server]
        if config_dir:
            args += ['--config-dir', str(config_dir)]
        self.process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True,
                                        env={**os.environ, **(env or {})})
        for line in self.process.stdout:  # until the line with the URL to open
            match = re.search(r'(http://\S+/login/token\?r=(\S+))', line)
            if match:
                self.url, self.request_id = match.groups()
                return
        self.process.wait()
        raise AssertionError('cli.py printed no URL: ' + self.process.stderr.read())

    def finish(self, *codes):
        out, err = self.process.communicate(''.join(c + '\n' for c in codes), timeout=60)
        self.process.stdout.close()
        self.process.stderr.close()
        return self.process.returncode, out, err


def test_cli_login_whoami_logout_end_to_end(server, client, logged_in, tmp_path):
    config = tmp_path / 'config'
    login = Login(server, config)
    assert login.url == f'{server}/login/token?r={login.request_id}'
    assert stored(login.request_id).ip == '127.0.0.1'
    code = confirm(client, login.request_id)
    status, out, err = login.finish(code)
    assert status == 0, err
    assert f'Logged in to {server} as alice' in out

    token_file = config / 'token.json'
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    secret = json.loads(token_file.read_text())['token']
    assert credentials.Token.prefix_of(secret) == 'pstt_'
    assert client.get(f'{API}/{login.request_id}?code={code}').status_code == 404  # reuse

    whoami = cli('whoami', '--config-dir', str(config))
    assert whoami.returncode == 0 and whoami.stdout.startswith('alice on ' + server)
    elsewhere = cli('whoami', '--host', 'http://example.invalid', '--config-dir', str(config))
    assert elsewhere.returncode == 1 and 'You are logged in to' in elsewhere.stderr

    logout = cli('logout', '--config-dir', str(config))
    assert logout.returncode == 0 and 'Logged out' in logout.stdout
    assert not token_file.exists()
    after = cli('whoami', '--config-dir', str(config))
    assert after.returncode == 1 and 'Not logged in' in after.stderr


def test_cli_keeps_its_token_under_the_users_config_directory(server, client, logged_in,
                                                              tmp_path):
    env = {'XDG_CONFIG_HOME': str(tmp_path / 'xdg'), 'PENSTOCK_CONFIG_DIR': ''}
    login = Login(server, None, env=env)
    status, _, err = login.finish(confirm(client, login.request_id))
    assert status == 0, err
    assert stat.S_IMODE((tmp_path / 'xdg' / 'penstock' / 'token.json').stat().st_mode) == 0o600
    env = {'PENSTOCK_CONFIG_DIR': str(tmp_path / 'xdg' / 'penstock')}
    assert cli('whoami', env=env).stdout.startswith('alice on ')


def test_cli_asks_again_after_a_wrong_code_and_gives_up_after_three(server, client, logged_in,
                                                                    tmp_path):
    login = Login(server, tmp_path)
    code = confirm(client, login.request_id)
    status, _, err = login.finish(wrong(code), wrong(code), wrong(code), code)
    assert status == 1
    assert '2 attempts left' in err and '1 attempt left' in err
    assert 'Too many wrong codes' in err
    assert not (tmp_path / 'token.json').exists()
    assert stored(login.request_id).status == 'failed'

    login = Login(server, tmp_path)
    code = confirm(client, login.request_id)
    status, out, err = login.finish(wrong(code), code)
    assert status == 0 and '2 attempts left' in err and 'Logged in' in out


def test_cli_login_fails_clearly_when_the_request_expires(server, client, logged_in, tmp_path):
    login = Login(server, tmp_path)
    code = confirm(client, login.request_id)
    expire(login.request_id)
    status, _, err = login.finish(code)
    assert status == 1
    assert 'This login request has ended' in err
    assert not (tmp_path / 'token.json').exists()


def test_cli_login_fails_clearly_when_declined(server, client, logged_in, tmp_path):
    login = Login(server, tmp_path)
    token = csrf_token(client, f'/login/token?r={login.request_id}')
    client.post(f'/login/token/{login.request_id}/decline', data={'csrf_token': token})
    status, _, err = login.finish('123456')
    assert status == 1 and 'This login request has ended' in err
    assert not (tmp_path / 'token.json').exists()


def test_cli_says_so_when_the_code_is_entered_before_verifying(server, client, logged_in,
                                                               tmp_path):
    login = Login(server, tmp_path)
    status, _, err = login.finish('123456')  # then stdin ends
    assert status == 1
    assert 'not been verified' in err and 'No code entered' in err
    assert stored(login.request_id).attempts == 0


def test_cli_whoami_after_reset_authentication_says_to_log_in_again(server, client, logged_in,
                                                                    tmp_path):
    login = Login(server, tmp_path)
    assert login.finish(confirm(client, login.request_id))[0] == 0
    with database.db.connection_context():
        credentials.reset_authentication(models.User.get_by_id(logged_in.id))
    whoami = cli('whoami', '--config-dir', str(tmp_path))
    assert whoami.returncode == 1 and 'refused the stored token' in whoami.stderr


def test_cli_reports_an_unreachable_server_and_a_bad_host(tmp_path):
    down = cli('login', '--host', 'http://127.0.0.1:9', '--config-dir', str(tmp_path))
    assert down.returncode == 1 and 'Cannot reach http://127.0.0.1:9' in down.stderr
    bad = cli('login', '--host', 'penstock', '--config-dir', str(tmp_path))
    assert bad.returncode == 1 and '--host must be a URL' in bad.stderr


def test_starting_requests_is_throttled_per_address_with_the_error_object(client):
    for _ in range(30):
        assert client.post(API).status_code == 201
    response = client.post(API)
    assert response.status_code == 429
    assert response.get_json()['title'] == 'Too Many Requests'
    with database.db.connection_context():
        assert credentials.LoginRequest.select().count() == 30
