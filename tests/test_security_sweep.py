"""The security sweep over app.url_map: the security headers on every page and the file rule
on every static file and avatar, another user's objects answering 404 on every route that
names one, and return targets on every endpoint that takes one. (Login requirement, CSRF and
cookie flags: test_security.py; secrets in log lines: test_logs.py.)"""
import ast
import datetime
import functools
import ipaddress
import itertools
import re
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import pytest
from flask import url_for
from werkzeug.security import generate_password_hash

import database
import models
import views
from credentials import RECENT_LOGIN, Session, Token
from tests.conftest import SESSION_COOKIE, database_dump
from tests.helpers import (
    HTMX,
    PASSWORD,
    UNSAFE,
    build,
    csrf_token,
    every_model,
    every_row,
    html,
    log_in,
    make_user,
    real_objects,
    routes_of,
)
from views.api import PREFERENCE_FIELDS
from views.avatars import avatar_url

# Routes that name no object of a user's (or a public one: every avatar is public by design,
# and a CLI login request belongs to nobody until a browser verifies it).
NOT_OWNED = {'user_id', 'filename', 'version', 'size', 'kind', 'request_id'}
IMMUTABLE = 'public, max-age=31536000, immutable'
PAGE_ONLY = ('X-Frame-Options', 'Cross-Origin-Opener-Policy', 'Referrer-Policy')


def rows_of(user_id):
    """Every row of every table that names the user."""
    return {table: [row for row in rows if user_id in row] for table, rows in every_row().items()}


def assert_security_headers(response, where):
    headers = response.headers
    csp = headers.get('Content-Security-Policy', '')
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, where
    assert headers.get('X-Content-Type-Options') == 'nosniff', where
    assert headers.get('X-Frame-Options') == 'DENY', where
    assert headers.get('Referrer-Policy') == 'same-origin', where
    assert headers.get('Cross-Origin-Opener-Policy') == 'same-origin', where


def assert_file_headers(response, lifetime, where):
    """A static file or an avatar: nosniff and its cache lifetime, and none of the headers that
    only a document uses, but for a policy on an SVG (opened by itself, it is a document that
    could run script)."""
    headers = response.headers
    assert response.status_code == 200, where
    assert headers.get('X-Content-Type-Options') == 'nosniff', where
    assert headers.get('Cache-Control') == lifetime, where
    assert not set(PAGE_ONLY) & set(headers.keys()), where
    if response.mimetype == 'image/svg+xml':
        policy = headers['Content-Security-Policy'].split('; ')
        assert "default-src 'none'" in policy, where
        assert not [rule for rule in policy if rule.startswith('script-src')], where
    else:
        assert 'Content-Security-Policy' not in headers, where


@pytest.mark.parametrize('who', ['anonymous', 'logged-in', 'bearer'])
def test_every_route_answers_with_the_security_headers(app, user, who):
    client = app.test_client()
    headers = {}
    if who == 'logged-in':
        log_in(client, 'alice')
    if who == 'bearer':
        with database.db.connection_context():
            _, secret = Token.issue(models.User.get_by_id(user.id))
        headers = {'Authorization': f'Bearer {secret}'}
    values = real_objects(user)
    for method, rule, url in routes_of(app, {'GET'} | UNSAFE, values):
        for extra in ({}, HTMX):
            response = client.open(url, method=method, headers={**headers, **extra})
            response.close()  # a streamed export ends in its request context
            assert_security_headers(response, (who, method, url, response.status_code))
    # Among the routes: /static/<filename> and /avatars/… naming nothing there, whose 404 is a
    # page like any other.
    for url in ('/no/such/page', '/api/v0/no/such', '/static/no/such.css'):
        assert_security_headers(client.get(url, headers=headers), url)


def test_every_static_file_and_avatar_answers_with_the_file_rule(app, user):
    static = Path(app.static_folder)
    names = sorted(path.relative_to(static).as_posix() for path in static.rglob('*')
                   if path.is_file())
    assert {'favicon.svg', 'css/app.css', 'js/app.js', 'js/crop.js'} <= set(names)
    client = app.test_client()
    log_in(client, 'alice')  # a logged-in browser fetches them, as pages do
    with app.test_request_context():
        files = [(url_for('static', filename=name), IMMUTABLE) for name in names]
        files += [(avatar_url(user, size), IMMUTABLE) for size in (96, 460)]
    files += [(f'/static/{name}', 'no-cache') for name in names]  # links from outside
    for url, lifetime in files:
        for encodings in ('', 'gzip, deflate, br, zstd'):
            with client.get(url, headers={'Accept-Encoding': encodings}) as response:
                assert_file_headers(response, lifetime, (url, encodings))


def test_another_users_objects_are_not_found_on_every_route(app, user):
    """Alice, logged in and with a token, names Bob's handle or Bob's objects on every route
    that takes one: each answers 404 (never 403, so nothing can be probed) and nothing of
    Bob's changes."""
    bob = make_user('bob@example.com', 'bob')
    bobs = real_objects(bob)
    bobs['handle'] = 'bob'
    client = app.test_client()
    log_in(client, 'alice')
    with database.db.connection_context():
        _, secret = Token.issue(models.User.get_by_id(user.id))
    token = client.get('/user/alice/settings/profile')
    csrf = token.get_data(as_text=True).split('name="csrf_token" value="')[1].split('"')[0]
    before = rows_of(bob.id)
    checked = set()
    for rule in app.url_map.iter_rules():
        named = set(rule.arguments) - NOT_OWNED
        if not named:
            continue
        for method in sorted((rule.methods or set()) & ({'GET'} | UNSAFE)):
            url = build(rule, bobs)
            if rule.rule.startswith('/api/'):
                response = client.open(url, method=method, json={},
                                       headers={'Authorization': f'Bearer {secret}'})
            else:
                response = client.open(url, method=method, headers={'X-CSRFToken': csrf},
                                       data={'handle': 'mallory', 'confirm': 'bob',
                                             'previewed': '1'})
            assert response.status_code == 404, (method, url, response.status_code)
            checked.add((method, rule.rule))
    assert rows_of(bob.id) == before
    assert {('GET', '/user/<handle>/settings/profile'), ('DELETE', '/api/v0/user/<handle>'),
            ('POST', '/workspaces/<workspace_id>/connection'),
            ('POST', '/user/<handle>/settings/tokens/<token_id>/delete'),
            ('GET', '/api/v0/user/<handle>/token/<token_id>')} <= checked


# Return targets ------------------------------------------------------------------------------

HOME = '/'
# (target, where it must lead): every way a browser could read a target as another site, and
# what stays on this one (percent-encoded as a Location header and an href need it). The test
# client's host is "localhost".
RETURN_TARGETS = [
    ('/\t/evil.example', HOME),
    ('/\n/evil.example', HOME),
    ('/\r/evil.example', HOME),
    ('/\r\n/evil.example', HOME),
    ('\t//evil.example', HOME),
    ('/\t\\evil.example', HOME),
    ('//evil.example', HOME),
    ('///evil.example', HOME),
    ('/\\evil.example', HOME),
    ('\\/evil.example', HOME),
    ('\\\\evil.example', HOME),
    ('/\\/evil.example', HOME),
    ('https://evil.example/steal', HOME),
    ('http://evil.example', HOME),
    ('HTTP://evil.example', HOME),
    ('hTtPs:evil.example', HOME),
    ('http:/\\evil.example', HOME),
    ('https:\\\\evil.example', HOME),
    ('https://evil@localhost/', HOME),
    ('https://localhost@evil.example/', HOME),
    ('https://localhost.evil.example/', HOME),
    ('http://localhost:8443/user/alice/settings/tokens', HOME),
    ('http://localhost//evil.example', HOME),
    ('ftp://localhost/x', HOME),
    ('javascript:alert(1)', HOME),
    ('JavaScript:alert(document.domain)', HOME),
    (' javascript:alert(1)', HOME),
    ('java\tscript:alert(1)', HOME),
    ('\x01javascript:alert(1)', HOME),
    ('data:text/html,<script>alert(1)</script>', HOME),
    ('%2f%2fevil.example', HOME),
    ('  //evil.example', HOME),
    ('\x0c//evil.example', HOME),
    ('\x00//evil.example', HOME),
    ('\x1f/\\evil.example', HOME),
    ('//évil.example', HOME),
    ('evil.example', HOME),
    ('?next=//evil.example', HOME),
    ('', HOME),
    ('/' + 'a' * 5000, HOME),
    ('/%09/evil.example', '/%09/evil.example'),
    ('/%0d%0aSet-Cookie:%20evil=1', '/%0d%0aSet-Cookie:%20evil=1'),
    ('/x\r\nSet-Cookie: evil=1', '/xSet-Cookie:%20evil=1'),
    ('/%2f%2fevil.example', '/%2f%2fevil.example'),
    ('/%5cevil.example', '/%5cevil.example'),
    ('/%252f%252fevil.example', '/%252f%252fevil.example'),
    ('/@evil.example', '/@evil.example'),
    ('http://localhost\\@evil.example/', '/@evil.example/'),
    ('/\x7f/evil.example', '/%7F/evil.example'),
    ('/ü/\u3000/evil.example', '/%C3%BC/%E3%80%80/evil.example'),
    ('/\uff0f\uff0fevil.example', '/%EF%BC%8F%EF%BC%8Fevil.example'),
    ('/100%', '/100%25'),
    ('/search?q=a\\b c', '/search?q=a%5Cb%20c'),
    ('/login?next=//evil.example', '/login?next=//evil.example'),
    ('HTTP://LOCALHOST/user/alice/settings/tokens?x=1', '/user/alice/settings/tokens?x=1'),
    ('/user/alice/settings/tokens?x=1&y=a%20b', '/user/alice/settings/tokens?x=1&y=a%20b'),
    ('/login/token?r=abc', '/login/token?r=abc'),
    ('/user/alice/settings/advanced#sessions', '/user/alice/settings/advanced#sessions'),
]
# Where app.py and the views read a return target; each such function is probed below.
READS_A_TARGET = re.compile(r'''request\.(values|args|form)(\.get\(|\[)\s*['"]next['"]'''
                            r'''|HX-Current-URL|request\.referrer|request\.full_path'''
                            r'''|request\.url\b''')
# Templates get their targets from the view, already decided.
TEMPLATE_READS_A_TARGET = re.compile(r'request\.(values|args|form|referrer|url|full_path)')


def assert_local(url, where):
    """`url` is a path on this site to a browser, and fit for a Location header or an href:
    printable ASCII, percent-encoded, one slash first, no scheme or host however read."""
    assert url is not None, where
    assert re.fullmatch(r"/(?![/\\])[A-Za-z0-9\-._~!$&'()*+,;=:@/?#%]*", url), (where, url)
    assert not re.search('%(?![0-9A-Fa-f]{2})', url), (where, url)
    as_read = urlsplit(url.replace('\\', '/'))
    assert not as_read.scheme and not as_read.netloc, (where, url)
    assert urlsplit(urljoin('http://localhost/a/page', url)).netloc == 'localhost', (where, url)


def sent_on(response, where):
    """Every address a response leads to or offers: its redirect headers, the links and
    forms on the page and the `next` it carries; each one is a path on this site."""
    assert response.status_code < 500, where
    page = html(response)
    sent = {name: response.headers.get(name) for name in ('Location', 'HX-Redirect')}
    sent['next'] = [field['value'] for field in page.find_all('input', attrs={'name': 'next'})]
    links = [link['href'] for link in page.find_all('a', href=True)]
    actions = [form['action'] for form in page.find_all('form', action=True)]
    for address in [sent['Location'], sent['HX-Redirect'], *sent['next'], *links, *actions]:
        if address is not None and not address.startswith('#'):  # the skip link stays put
            assert_local(address, where)
    return sent


def next_of(address, path):
    """The `next` of an address on `path` (asserting that it leads there)."""
    parts = urlsplit(address)
    assert parts.path == path, address
    return parse_qs(parts.query, keep_blank_values=True).get('next', [None])[0]


def too_long(target, back):
    """A page's own address, too long to come back to, leads home instead."""
    return len(target) > views.TARGET_MAX and back == HOME


def header_safe(target):
    """A target a browser could send as a header (Referer, HX-Current-URL) at all."""
    return not set(target) & {'\r', '\n', '\x00'} and max(map(ord, target), default=0) < 256


def led(response, target, where):
    """What a GET (its target in the query) or a request with the target in a header leads
    to; a target holding a control character no URL or header may hold is refused with a 400
    before any view reads it (views.control_character), which leads nowhere."""
    if views.CONTROL_CHARACTER.search(target):
        assert response.status_code == 400, where
        return None
    return sent_on(response, where)


class Site:
    """The app, and for each target a user of its own and browsers from an address of its own
    (so that no throttle counts one target's attempts against another's)."""

    def __init__(self, app):
        self.app = app
        self.made = itertools.count(1)

    def user(self):
        """A new user's handle (its password is quick to check: see the `site` fixture)."""
        handle = f'visitor{next(self.made)}'
        make_user(f'{handle}@example.com', handle)
        return handle

    def browser(self, login=None, stale=False):
        client = self.app.test_client()
        client.environ_base['REMOTE_ADDR'] = str(ipaddress.ip_address('10.0.0.0')
                                                 + next(self.made))
        if login:
            assert log_in(client, login).status_code == 302
            if stale:
                with database.db.connection_context():
                    long_ago = models.utcnow() - RECENT_LOGIN - datetime.timedelta(
                        minutes=1)
                    Session.update(authenticated_at=long_ago, created_at=long_ago).where(
                        Session.user == models.User.get(handle=login)).execute()
        return client

    def sessions_of(self, login):
        with database.db.connection_context():
            return Session.select().where(
                Session.user == models.User.get(handle=login)).count()

    @functools.cached_property
    def throttled(self):
        """A browser refused further logins and one refused further re-authentication."""
        handle = self.user()
        browsers = {'/login': self.browser(), '/reauth': self.browser(handle, stale=True),
                    '/signup': self.browser()}
        for url, browser in browsers.items():
            token = csrf_token(browser, url)
            for _ in range(200):
                response = browser.post(url, data={'email': handle, 'csrf_token': token,
                                                   'password': 'wrong password'})
                if response.status_code == 429:
                    break
                assert response.status_code == (422 if url == '/signup' else 401)
            assert response.status_code == 429, url
        return handle, browsers


def probe_login(site, target, expected):
    """GET and POST /login: the form's `next`, and where a right password leads."""
    handle, client = site.user(), site.browser()
    page = client.get('/login', query_string={'next': target})
    assert (led(page, target, ('GET /login', target)) or {'next': [expected]})['next'] == [
        expected]
    form = {'email': handle, 'csrf_token': csrf_token(client, '/login'), 'next': target}
    wrong = client.post('/login', data={**form, 'password': 'wrong password'})
    assert wrong.status_code == 401
    assert sent_on(wrong, ('POST /login, wrong', target))['next'] == [expected]
    assert carried_to(wrong, 'Sign up', '/signup') == expected
    right = client.post('/login', data={**form, 'password': PASSWORD})
    assert right.status_code == 302
    assert sent_on(right, ('POST /login', target))['Location'] == expected
    # Logged in properly, whatever the target held (no header of its own, no 500 once the
    # session was made).
    assert site.sessions_of(handle) == 1
    assert client.get_cookie(SESSION_COOKIE) and not client.get_cookie('evil')
    assert client.get(f'/user/{handle}/settings/profile').status_code == 200
    again = client.get('/login', query_string={'next': target})
    sent = led(again, target, ('GET /login, logged in', target))
    assert sent is None or (again.status_code == 302 and sent['Location'] == expected)


def carried_to(response, link, path):
    """The return target the page's link named `link` (to `path`) carries on: the console
    home when it carries none."""
    return next_of(html(response).find('a', string=link)['href'], path) or HOME


def probe_signup(site, target, expected):
    """GET and POST /signup: the form's `next`, the Log in link's, and where signing up
    leads; the login page's Sign up link carries no other target."""
    client = site.browser()
    page = client.get('/signup', query_string={'next': target})
    if led(page, target, ('GET /signup', target)) is not None:
        assert sent_on(page, ('GET /signup', target))['next'] == [expected]
        assert carried_to(page, 'Log in', '/login') == expected
        login = client.get('/login', query_string={'next': target})
        assert carried_to(login, 'Sign up', '/signup') == expected
    handle = f'newcomer{next(site.made)}'
    form = {'email': 'not an email', 'handle': handle, 'password': PASSWORD, 'next': target,
            'csrf_token': csrf_token(client, '/signup')}
    refused = client.post('/signup', data=form)
    assert refused.status_code == 422
    assert sent_on(refused, ('POST /signup, refused', target))['next'] == [expected]
    assert carried_to(refused, 'Log in', '/login') == expected
    right = client.post('/signup', data={**form, 'email': f'{handle}@example.com'})
    assert right.status_code == 302
    assert sent_on(right, ('POST /signup', target))['Location'] == expected
    assert site.sessions_of(handle) == 1 and not client.get_cookie('evil')
    again = client.get('/signup', query_string={'next': target})
    sent = led(again, target, ('GET /signup, logged in', target))
    assert sent is None or (again.status_code == 302 and sent['Location'] == expected)


def probe_reauthenticate(site, target, expected):
    """GET and POST /reauth: the form's `next`, Cancel, and where the right password leads."""
    handle = site.user()
    client = site.browser(handle, stale=True)
    page = client.get('/reauth', query_string={'next': target})
    if led(page, target, ('GET /reauth', target)) is not None:
        assert sent_on(page, ('GET /reauth', target))['next'] == [expected]
        assert html(page).find('a', string='Cancel')['href'] == expected
    form = {'csrf_token': csrf_token(client, '/reauth'), 'next': target}
    wrong = client.post('/reauth', data={**form, 'password': 'wrong password'})
    assert wrong.status_code == 401
    assert sent_on(wrong, ('POST /reauth, wrong', target))['next'] == [expected]
    assert html(wrong).find('a', string='Cancel')['href'] == expected
    right = client.post('/reauth', data={**form, 'password': PASSWORD})
    assert right.status_code == 303
    assert sent_on(right, ('POST /reauth', target))['Location'] == expected


def probe_too_many_attempts(site, target, expected):
    """Throttled, the login, sign-up and re-authentication pages still carry only a local
    `next`."""
    handle, browsers = site.throttled
    for url, browser in browsers.items():
        response = browser.post(url, data={'email': handle, 'password': 'wrong password',
                                           'csrf_token': csrf_token(browser, url),
                                           'next': target})
        assert response.status_code == 429
        assert sent_on(response, (url, 'throttled', target))['next'] == [expected]
        if url != '/reauth':
            other = {'/login': ('Sign up', '/signup'), '/signup': ('Log in', '/login')}[url]
            assert carried_to(response, *other) == expected


def probe_unauthorized(site, target, expected):
    """Logged out, a page sends to log in, and htmx is told to leave the page it is on."""
    client = site.browser()
    if header_safe(target):
        left = client.post('/logout', headers={**HTMX, 'HX-Current-URL': target,
                                               'X-CSRFToken': csrf_token(client, '/login')})
        sent = led(left, target, ('htmx POST', target))
        assert sent is None or (left.status_code == 401
                                and next_of(sent['HX-Redirect'], '/login') == expected)
    # A link leads back to itself, whatever its query holds.
    page = '/user/someone/settings/profile'
    for headers, answer in [({}, 'Location'), (HTMX, 'HX-Redirect')]:
        response = client.get(page, query_string={'next': target}, headers=headers)
        sent = led(response, target, (answer, target))
        if sent is not None:
            back = next_of(sent[answer], '/login')
            assert back.startswith(page + '?next=') or too_long(target, back)
            assert_local(back, target)


def probe_recent_login_required(site, target, expected):
    """A stale session is sent to confirm its password, then back to where it was."""
    handle = site.user()
    client = site.browser(handle, stale=True)
    action = f'/user/{handle}/settings/advanced/delete'
    form = {'confirm': handle, 'csrf_token': csrf_token(client, '/reauth')}
    if header_safe(target):
        for headers, answer in [({'Referer': target}, 'Location'),
                                ({**HTMX, 'HX-Current-URL': target}, 'HX-Redirect')]:
            response = client.post(action, data=form, headers=headers)
            sent = led(response, target, (answer, target))
            assert sent is None or next_of(sent[answer], '/reauth') == expected
    response = client.get(action, query_string={'next': target})
    sent = led(response, target, ('GET', target))
    if sent is not None:
        back = next_of(sent['Location'], '/reauth')
        assert back.startswith(action + '?next=') or too_long(target, back)
        assert_local(back, target)
    assert site.sessions_of(handle) == 1  # nothing was deleted


# module.function that reads a return target -> the probe that sends it every target above.
PROBES = {
    'views.auth.login': probe_login,
    'views.auth.signup': probe_signup,
    'views.auth.reauthenticate': probe_reauthenticate,
    'views.auth.too_many_attempts': probe_too_many_attempts,
    'app.unauthorized': probe_unauthorized,
    'views.recent_login_required': probe_recent_login_required,
}


def code_of(function):
    """A function's code without its docstrings (which may name a header it does not read)."""
    for node in ast.walk(function):
        if isinstance(node, ast.FunctionDef) and ast.get_docstring(node):
            node.body = node.body[1:] or [ast.Pass()]
    return ast.unparse(function)


@pytest.fixture
def site(app, monkeypatch):
    """Users whose password hashes are quick to check: the sweep checks hundreds of
    passwords, and the hash is not what it is about."""
    quick = functools.partial(generate_password_hash, method='pbkdf2:sha256:1')
    monkeypatch.setattr(models, 'generate_password_hash', quick)
    return Site(app)


def test_every_function_that_reads_a_return_target_is_probed(app):
    """A new view (or helper) that reads `next`, HX-Current-URL or a Referer fails here until
    it is added to PROBES, so the sweep below covers it too."""
    root = Path(app.root_path)
    found = set()
    for path in [root / 'app.py', *sorted((root / 'views').glob('*.py'))]:
        module = 'app' if path.name == 'app.py' else (
            'views' if path.stem == '__init__' else f'views.{path.stem}')
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and READS_A_TARGET.search(code_of(node)):
                found.add(f'{module}.{node.name}')
    assert found == set(PROBES)
    for template in sorted((root / 'templates').rglob('*.html')):
        assert not TEMPLATE_READS_A_TARGET.search(template.read_text()), template


@pytest.mark.slow  # hundreds of targets through every way in
@pytest.mark.parametrize('probe', PROBES.values(), ids=PROBES.keys())
def test_return_targets_on_every_endpoint_that_takes_one_stay_on_this_site(site, probe):
    """Every target in the table, through every way in: the redirect, the form's `next` and
    every link lead to a path on this site, and nothing answers with a 5xx."""
    for target, expected in RETURN_TARGETS:
        probe(site, target, expected)


def test_a_return_target_is_decided_once_and_for_all(app):
    """What return_target makes of a target, it keeps: a form's `next` sent back, or a page
    reached through it, is decided the same way. What urllib cannot read goes home."""
    with app.test_request_context():
        for target, expected in RETURN_TARGETS:
            assert views.return_target(target) == expected, target
            assert views.return_target(expected) == expected, target
        for target in ('/a\ud800b', 'http://[evil.example/', None):
            assert views.return_target(target) == HOME, target


def test_a_login_loop_through_next_stays_on_this_site(site):
    client = site.browser(site.user())
    response = client.get('/login', query_string={'next': '/login?next=//evil.example'})
    assert response.headers['Location'] == '/login?next=//evil.example'
    assert client.get(response.headers['Location']).headers['Location'] == HOME


# --- Malformed input (issue 12, finding 8; SPEC §12): JSON bodies on every API operation, text
# fields on every form, control characters in every URL and header. ---

# Columns a request moves on by itself when a credential is used (once a minute).
TOUCHED = {'last_used_at', 'last_seen_at'}


def unchanged_rows():
    """Every row of every table but for the columns in TOUCHED, and but the records of failed
    attempts at a password (a refused login may be recorded)."""
    with database.db.connection_context():
        rows = {}
        for model in every_model():
            fields = [field for field in model._meta.sorted_fields if field.name not in TOUCHED]
            query = model.select(*fields)
            if model is models.AuditRecord:
                query = query.where(~models.AuditRecord.action_type.endswith('.failed'))
            rows[model.__name__] = sorted(map(repr, query.tuples()))
        return rows


def assert_error_model(response, status, where):
    """The API's error object with `status` (None: any 4xx), saying where the fault is."""
    assert response.status_code == status if status else 400 <= response.status_code < 500, \
        (where, response.status_code, response.data[:300])
    body = response.get_json()
    assert set(body) == {'type', 'title', 'status', 'detail', 'instance', 'validation_errors'}, \
        where
    assert body['status'] == response.status_code and body['detail'], where
    assert body['validation_errors'] or response.status_code != 400, where
    return body


def credentials(app, user):
    """Alice's browser (logged in, with the page's CSRF token) and bearer token, together: each
    API operation takes the one it takes."""
    client = app.test_client()
    log_in(client, 'alice')
    with database.db.connection_context():
        _, secret = Token.issue(models.User.get_by_id(user.id))
    csrf = csrf_token(client, '/user/alice/settings/profile')
    return client, {'Authorization': f'Bearer {secret}', 'X-CSRFToken': csrf}


API_BODY_FIELDS = ['display_name', 'handle', 'status', *PREFERENCE_FIELDS]
MALFORMED_BODIES = {
    'deep arrays': b'[' * 50_000,
    'deep objects': b'{"a":' * 50_000,
    'nested within the limit': b'[' * 500 + b']' * 500,
    'not UTF-8': b'{"display_name": "\xff\xfe"}',
    'a UTF-8 surrogate': b'{"display_name": "\xed\xa0\x80"}',
    'not JSON': b'{"display_name": ',
    'NaN': b'{"status": NaN}',
    'an array': b'[]',
    'a string': b'"display_name"',
    'null': b'null',
}


def test_every_api_operation_refuses_malformed_json_with_a_400_and_changes_nothing(app, user):
    """Every POST, PATCH and PUT under /api/: bodies nested past the parser, not UTF-8, not
    JSON, not an object, or holding a lone surrogate (in each field the API takes) answer 400
    with the error model, at `body.<field>` for the surrogate; never a 5xx."""
    values = real_objects(user)
    client, headers = credentials(app, user)
    checked = set()
    for method, rule, url in routes_of(app, {'POST', 'PATCH', 'PUT'}, values):
        if not rule.startswith('/api/'):
            continue
        # The avatar upload takes a multipart form: a JSON body is refused as a form would be
        # (400, or 429 once uploads are counted), never parsed.
        takes_form = rule.endswith('/avatar')
        before = unchanged_rows()
        bodies = [(name, body, None) for name, body in MALFORMED_BODIES.items()]
        bodies += [(f'a lone surrogate in {field}', '{"%s": "ab\\ud800cd"}' % field,
                    f'body.{field}') for field in API_BODY_FIELDS]
        for name, body, location in bodies:
            response = client.open(url, method=method, data=body, headers=headers,
                                   content_type='application/json')
            errors = assert_error_model(response, None if takes_form else 400,
                                        (method, url, name))['validation_errors']
            assert all(error['location'].startswith('body') for error in errors), errors
            if location and not takes_form:
                assert errors == [{'location': location, 'message': errors[0]['message']}]
                assert 'lone surrogate' in errors[0]['message']
        assert unchanged_rows() == before, (method, url)
        checked.add((method, rule))
    assert {('PATCH', '/api/v0/user/<handle>'), ('POST', '/api/v0/login/token'),
            ('PATCH', '/api/v0/login/token/<request_id>'),
            ('PATCH', '/api/v0/user/<handle>/preferences')} <= checked


# Inputs a person types text into (number fields, the avatar crop's, take digits only).
FORM_INPUT_TYPES = {'text', 'email', 'password', 'search', 'url', 'tel', None}
# Every text field of every form, with a value its form accepts: the sweep finds the fields by
# rendering every page, and this list must name each (a new field needs a value here).
TEXT_FIELDS = {
    ('auth.signup', 'email'): 'carol@example.com', ('auth.signup', 'handle'): 'carol',
    ('auth.signup', 'password'): PASSWORD, ('auth.login', 'email'): 'alice',
    ('auth.login', 'password'): PASSWORD, ('auth.reauthenticate', 'password'): PASSWORD,
    ('profile.save_name', 'display_name'): 'Alice Liddell',
    ('home.create', 'handle'): 'reports', ('advanced.change_handle', 'handle'): 'alicia',
    ('advanced.delete_account', 'confirm'): 'alice',
    ('profile.change_email', 'new_email'): 'alice@work.example',
}
# Characters no text field takes: controls (C0, DEL, C1), a line separator, invisible format
# characters (a right-to-left override, a zero-width space, a byte order mark, a tag), a
# private-use character, code points Unicode has not assigned and a noncharacter.
HOSTILE_CHARACTERS = ['\x00', '\x1b', '\x7f', '\x85', '\u2028', '\u202e', '\u200b', '\ufeff',
                      '\U000E0041', '\ue000', '\u0378', '\U000EFFFD', '\ufffe']


def text_fields_of_every_form(app, user):
    """{(endpoint, field): (client, the form's action, the form's fields as rendered)} for every
    text field of every POST form on every page, as a visitor and as Alice."""
    values = real_objects(user)
    visitor, (alice, _) = app.test_client(), credentials(app, user)
    pages = [url for _, rule, url in routes_of(app, {'GET'}, values)
             if not rule.startswith(('/api/', '/static/', '/avatars/')) and 'export' not in rule]
    adapter = app.url_map.bind('localhost')
    found = {}
    for client in (visitor, alice):
        for page in pages:
            response = client.get(page)
            if response.status_code != 200:
                continue
            for form in html(response).find_all('form', method=re.compile('^post$', re.I)):
                action = urljoin(page, form.get('action') or page)
                endpoint, _ = adapter.match(urlsplit(action).path, method='POST')
                fields = {field['name']: field.get('value', '')
                          for field in form.find_all(['input', 'textarea'])
                          if field.get('name') and field.get('type') not in ('submit', 'file')}
                for field in form.find_all(['input', 'textarea']):
                    if (field.name == 'textarea' or field.get('type') in FORM_INPUT_TYPES) \
                            and field.get('name') and not field.has_attr('readonly'):
                        found.setdefault((endpoint, field['name']), (client, action, fields))
    return found


def shows_the_message(response, name):
    """The field is marked invalid and described by its message, or (a login, which never says
    which field was wrong) the form has an alert."""
    page = html(response)
    field = page.find(attrs={'name': name, 'aria-invalid': 'true'})
    if field is not None:
        return any(page.find(id=described).get_text(strip=True)
                   for described in field.get('aria-describedby', '').split()
                   if page.find(id=described))
    return bool(page.find(attrs={'role': 'alert'}))


@pytest.mark.slow  # every hostile character in every field
def test_every_text_field_of_every_form_refuses_control_and_unassigned_characters(app, user):
    """A text field holding a control, format, private-use or unassigned character is refused
    with a 4xx and a message by the field, on every form; nothing changes, never a 5xx."""
    app.config.update(LOGIN_FAILURES_PER_ACCOUNT='10000 per minute',
                      LOGIN_FAILURES_PER_IP='10000 per minute', SIGNUPS_PER_IP='10000 per minute')
    forms = text_fields_of_every_form(app, user)
    assert set(forms) == set(TEXT_FIELDS)
    before = unchanged_rows()
    for (endpoint, name), (client, action, fields) in sorted(forms.items()):
        filled = {**fields, **{field: TEXT_FIELDS[endpoint, field] for field in fields
                               if (endpoint, field) in TEXT_FIELDS}}
        for character in HOSTILE_CHARACTERS:
            valid = filled[name]
            form = {**filled, name: valid[:2] + character + valid[2:]}
            response = client.post(action, data=form)
            where = (endpoint, name, f'U+{ord(character):04X}', response.status_code)
            assert 400 <= response.status_code < 500, where
            assert shows_the_message(response, name), where
            assert unchanged_rows() == before, where


def test_a_lone_surrogate_sent_to_any_form_is_never_stored_or_a_5xx(app, user):
    """A form cannot carry a lone surrogate as one: its UTF-8 bytes, percent-encoded, are read
    as the text "%ED%A0%80", and raw they make the form unreadable (refused as stale)."""
    forms = text_fields_of_every_form(app, user)
    for (endpoint, name), (client, action, fields) in sorted(forms.items()):
        filled = {**fields, **{field: TEXT_FIELDS[endpoint, field] for field in fields
                               if (endpoint, field) in TEXT_FIELDS}}
        lone = filled[name].encode() + '\ud800'.encode('utf-8', 'surrogatepass')
        for body in (urlencode({**filled, name: lone}).encode(),
                     urlencode(filled).encode().replace(b'csrf_token=', lone + b'&csrf_token=')):
            response = client.post(action, data=body,
                                   content_type='application/x-www-form-urlencoded')
            assert response.status_code < 500, (endpoint, name, response.status_code)
    assert not re.search('[\ud800-\udfff]', database_dump())


def test_a_control_character_in_any_url_or_header_is_a_400_on_every_route(app, user):
    """SPEC §12: a path, query or header holding a control character (NUL, ESC, DEL) answers
    400 with a message, as a page or as the API's error model, before anything reads it."""
    values = real_objects(user)
    client, headers = credentials(app, user)
    before = unchanged_rows()
    checked = 0
    for method, rule, url in routes_of(app, {'GET'} | UNSAFE, values):
        requests = [(url + '%00', {}), (url + '?next_token=a%7Fb&action_type=%1B', {})]
        requests += [(url, {name: 'a\x00b'}) for name in ('User-Agent', 'HX-Current-URL')]
        requests += [(url, {'Authorization': headers['Authorization'] + '\x7f'})]
        for target, extra in requests:
            response = client.open(target, method=method, headers={**headers, **extra})
            where = (method, target, extra)
            if rule.startswith('/api/'):
                assert_error_model(response, 400, where)
            else:
                assert response.status_code == 400, where
                assert html(response).find(attrs={'role': 'alert'}), where
            checked += 1
    assert checked > 200
    assert unchanged_rows() == before
