"""CSRF on every state-changing route, cookies kept out of the API, cookie flags, secrets."""
import os
import stat

import pytest

import credentials
import database
import models
from app import _persisted_secret, create_app
from tests.conftest import SESSION_COOKIE, TEST_PASSWORD_KEY
from tests.helpers import (
    HTMX,
    PASSWORD,
    UNSAFE,
    csrf_token,
    every_row,
    html,
    log_in,
    make_user,
    real_objects,
    routes_of,
    state_changing_routes,
)

API = '/api/v0/'
# The API takes bearer tokens, never cookies, so it needs no CSRF token; except:
API_WITHOUT_AUTH = {('POST', '/api/v0/login/token')}  # a CLI starts a login: by design
API_WITH_COOKIES = {('PATCH', '/api/v0/login/token/<request_id>'),  # the browser side of
                    ('DELETE', '/api/v0/login/token/<request_id>')}  # CLI login: CSRF applies
# RFC 8058 one-click unsubscribe: a mail provider POSTs with no cookie and no CSRF token; the
# signed token in the URL is the credential (tests/test_announcements.py forges it).
WITHOUT_CSRF = {('POST', '/unsubscribe/<token>')}
FORGED = ({}, HTMX, {'X-CSRFToken': 'forged'})
# Everything else outside the API needs a logged-in browser.
PUBLIC = {('GET', '/login'), ('POST', '/login'), ('GET', '/signup'), ('POST', '/signup'),
          ('GET', '/goodbye'), ('GET', '/static/<path:filename>'),
          ('GET', '/avatars/<user_id>/<int:version>/<int:size>.webp'),
          ('GET', '/unsubscribe/<token>'), ('GET', '/signup/confirm'), *WITHOUT_CSRF}


def test_there_are_state_changing_routes_to_check(app):
    routes = {(method, url) for method, _, url in state_changing_routes(app)}
    assert ('POST', '/login') in routes and ('POST', '/logout') in routes
    assert ('POST', '/user/alice/settings/profile') in routes
    assert ('POST', '/api/v0/user/alice/token') in routes
    assert ('POST', '/workspaces') in routes and ('DELETE', '/api/v0/user/alice') in routes
    assert ('POST', '/user/alice/settings/advanced/delete') in routes
    rules = {(method, rule) for method, rule, _ in state_changing_routes(app)}
    # The exceptions cannot go stale.
    assert API_WITHOUT_AUTH | API_WITH_COOKIES | WITHOUT_CSRF <= rules
    every = {(method, rule) for method, rule, _ in routes_of(app, {'GET', 'POST'})}
    assert PUBLIC <= every


@pytest.mark.parametrize('anonymous', [False, True], ids=['logged-in', 'anonymous'])
def test_every_state_changing_route_refuses_a_request_without_csrf(app, user, anonymous):
    client = app.test_client()
    if not anonymous:
        log_in(client, 'alice')
    form = {'email': 'alice', 'password': PASSWORD, 'handle': 'mallory', 'previewed': '1',
            'confirm': 'alice', 'display_name': 'Pwned', 'community_updates': 'on'}
    values = real_objects(user)
    before = every_row()
    for method, rule, url in state_changing_routes(app, values):
        if rule.startswith(API) and (method, rule) not in API_WITH_COOKIES:
            continue  # cookies do not work there at all: see the next test
        for headers in FORGED:
            response = client.open(url, method=method, data=form, headers=headers)
            if (method, rule) in WITHOUT_CSRF:  # the forged token is what is refused
                assert response.status_code == 404, (method, url)
            elif rule.startswith(API):  # no session is a 401; a session without CSRF, 400
                assert response.status_code == (401 if anonymous else 400), (method, url)
                assert response.get_json()['status'] == response.status_code
            else:
                assert response.status_code == 400, (method, url, headers)
                assert 'nothing was changed' in response.get_data(as_text=True)
    assert every_row() == before


@pytest.mark.parametrize('anonymous', [False, True], ids=['logged-in', 'anonymous'])
def test_a_browser_session_cannot_change_anything_through_the_api(app, user, anonymous):
    client = app.test_client()
    if not anonymous:
        log_in(client, 'alice')
    body = {'display_name': 'Pwned', 'status': 'inactive',
            'communication_tips_and_tricks': 'enabled'}
    values = real_objects(user)
    before = every_row()
    checked = set()
    for method, rule, url in state_changing_routes(app, values):
        if not rule.startswith(API) or (method, rule) in API_WITH_COOKIES | API_WITHOUT_AUTH:
            continue
        for headers in FORGED:
            response = client.open(url, method=method, json=body, headers=headers)
            assert response.status_code == 401, (method, url, headers)
            assert response.get_json()['title'] == 'Unauthorized'
        checked.add((method, rule))
    assert {('PATCH', '/api/v0/user/<handle>'), ('DELETE', '/api/v0/user/<handle>'),
            ('POST', '/api/v0/user/<handle>/token'), ('POST', '/api/v0/user/<handle>/password'),
            ('DELETE', '/api/v0/user/<handle>/token/<token_id>')} <= checked
    assert every_row() == before


@pytest.mark.parametrize('headers', [{}, HTMX], ids=['page', 'htmx'])
def test_every_page_but_the_public_ones_requires_login(app, user, headers):
    """Anonymous, with a valid CSRF token so that only the login check can stop it: every
    non-API route outside PUBLIC sends the visitor to log in and changes nothing."""
    client = app.test_client()
    token = csrf_token(client, '/login')
    values = real_objects(user)
    before = every_row()
    checked = set()
    for method, rule, url in routes_of(app, {'GET'} | UNSAFE, values):
        if rule.startswith(API) or (method, rule) in PUBLIC:
            continue
        response = client.open(url, method=method, headers={**headers, 'X-CSRFToken': token},
                               data={'handle': 'mallory', 'confirm': 'alice',
                                     'password': PASSWORD, 'previewed': '1'})
        if headers:
            assert response.status_code == 401, (method, url)
            assert response.headers['HX-Redirect'].startswith('/login'), (method, url)
        else:
            assert response.status_code == 302, (method, url)
            assert response.headers['Location'].startswith('/login?next='), (method, url)
        checked.add((method, rule))
    assert {('GET', '/'), ('POST', '/workspaces'), ('GET', '/reauth'), ('POST', '/reauth'),
            ('POST', '/logout'), ('GET', '/login/token'),
            ('POST', '/user/<handle>/settings/advanced/delete'),
            ('POST', '/user/<handle>/settings/advanced/sessions/<session_id>/revoke'),
            ('POST', '/user/<handle>/settings/profile/password/rotate')} <= checked
    assert every_row() == before


def test_public_pages_answer_without_login(app, user):
    client = app.test_client()
    for url in ('/login', '/signup', '/goodbye', f'/avatars/{user.id}/1/96.webp'):
        assert client.get(url).status_code == 200, url


def test_htmx_may_send_the_token_as_a_header(client, logged_in):
    page = html(client.get('/user/alice/settings/profile'))
    token = page.find('input', attrs={'name': 'csrf_token'})['value']
    assert token in page.body['hx-headers']
    response = client.post('/user/alice/settings/profile', data={'display_name': 'Al'},
                           headers={**HTMX, 'X-CSRFToken': token})
    assert response.status_code == 200


def test_session_cookie_is_httponly_lax_and_secure(client, user):
    response = log_in(client, 'alice')
    cookie = [c for c in response.headers.getlist('Set-Cookie')
              if c.startswith(SESSION_COOKIE + '=')][0]
    assert '; HttpOnly' in cookie and '; SameSite=Lax' in cookie and '; Secure' in cookie


def test_the_secure_session_cookie_is_a_host_only_cookie_for_the_whole_site(client, user):
    response = log_in(client, 'alice')
    (cookie,) = [c for c in response.headers.getlist('Set-Cookie')
                 if c.startswith('__Host-penstock_session=')]
    assert '; Secure' in cookie and '; Path=/;' in cookie and 'Domain=' not in cookie
    assert client.get('/user/alice/settings/profile').status_code == 200


HSTS = 'max-age=63072000; includeSubDomains'


def test_every_answer_tells_browsers_to_keep_to_https_when_cookies_are_secure(client, user):
    urls = ['/login', '/signup', '/static/css/app.css', '/no-such-page', '/api/v0/actor',
            '/api/v0/openapi.json', f'/avatars/{user.id}/1/96.webp']
    for url in urls:
        assert client.get(url).headers['Strict-Transport-Security'] == HSTS, url
    response = log_in(client, 'alice')
    assert response.status_code == 302 and response.headers['Strict-Transport-Security'] == HSTS
    for url in urls + ['/', '/user/alice/settings/profile']:
        assert client.get(url).headers['Strict-Transport-Security'] == HSTS, url


def test_cookies_can_be_made_insecure_for_plain_http_development(database_url, monkeypatch):
    monkeypatch.setenv('SECURE_COOKIES', '0')
    app = create_app({'SECRET_KEY': 'x', 'DATABASE_URL': database_url,
                      'DATABASE_PASSWORD_KEYS': TEST_PASSWORD_KEY})
    assert app.config['SESSION_COOKIE_SECURE'] is False
    database.migrate(database.db.obj)
    make_user()
    client = app.test_client()
    response = log_in(client, 'alice')
    assert response.status_code == 302
    cookies = {cookie.partition('=')[0]: cookie
               for cookie in response.headers.getlist('Set-Cookie')}
    assert set(cookies) == {'penstock_session', 'penstock_device'}
    assert not [cookie for cookie in cookies.values() if '; Secure' in cookie]
    # Plain http (make run): no HSTS, which would send the browser to an https that is not there.
    for answer in (response, client.get('/'), client.get('/static/css/app.css')):
        assert 'Strict-Transport-Security' not in answer.headers
    database.db.close()


def test_login_gives_a_fresh_session_cookie(client, user):
    client.get('/login')
    before = client.get_cookie(SESSION_COOKIE).value
    log_in(client, 'alice')
    assert client.get_cookie(SESSION_COOKIE).value != before


def test_secret_key_is_generated_once_and_kept_private(tmp_path):
    first = _persisted_secret(str(tmp_path))
    assert len(first) == 64
    assert _persisted_secret(str(tmp_path)) == first
    mode = os.stat(tmp_path / 'secret_key').st_mode
    assert stat.S_IMODE(mode) == 0o600


def test_passwords_are_hashed_not_stored(user):
    with database.db.connection_context():
        stored = models.User.get().password_hash
    assert stored.startswith('scrypt:') and 'correct horse' not in stored


def test_session_rows_keep_only_a_hash_of_the_cookie_secret(app, client, logged_in):
    cookie = client.get_cookie(SESSION_COOKIE).value
    secret = app.session_interface.get_signing_serializer(app).loads(cookie)['_user_id']
    with database.db.connection_context():
        row = credentials.Session.get()
    assert row.token_hash == models.sha256(secret) and row.id.startswith('s_')
    assert secret not in repr(every_row())
