"""The security sweep over app.url_map: the security headers on every page and the file rule
on every static file and avatar, and another user's objects answering 404 on every route that
names one. (Login requirement, CSRF and
cookie flags: test_security.py; secrets in log lines: test_logs.py.)"""
from pathlib import Path

import pytest
from flask import url_for

import models
from tests.conftest import HTMX, log_in, make_user
from tests.test_security import UNSAFE, build, real_objects, routes_of, snapshot
from views.avatars import avatar_url

# Routes that name no object of a user's (or a public one: every avatar is public by design,
# and a CLI login request belongs to nobody until a browser verifies it).
NOT_OWNED = {'user_id', 'filename', 'version', 'size', 'kind', 'request_id'}
IMMUTABLE = 'public, max-age=31536000, immutable'
PAGE_ONLY = ('X-Frame-Options', 'Cross-Origin-Opener-Policy', 'Referrer-Policy')


def rows_of(user_id):
    """Every row of every table that names the user."""
    return {table: [row for row in rows if user_id in row] for table, rows in snapshot().items()}


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
        with models.db.connection_context():
            _, secret = models.Token.issue(models.User.get_by_id(user.id))
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
    with models.db.connection_context():
        _, secret = models.Token.issue(models.User.get_by_id(user.id))
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
