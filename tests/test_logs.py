"""Secrets stay out of the logs: every log line written while they are made and used."""
import http.cookiejar
import json
import logging
import re
import secrets
import urllib.error
import urllib.request
from urllib.parse import quote

import pytest

import announcements
import database
import models
import views
from tests.helpers import PASSWORD


class Browser:
    """A cookie-keeping HTTP client, like a browser with JavaScript off."""

    def __init__(self, base):
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def open(self, path, data=None, method=None, headers=None):
        body = data if data is None or isinstance(data, bytes) else \
            urllib.parse.urlencode(data).encode()
        request = urllib.request.Request(self.base + path, data=body, method=method,
                                         headers=headers or {})
        try:
            with self.opener.open(request, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            with error:
                return error.code, error.read().decode()

    def csrf(self, path):
        _, page = self.open(path)
        return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)

    def cookie(self, name):
        return next(c.value for c in self.jar if c.name == name)


def bearer(base, path, secret, method='GET', body=None):
    request = urllib.request.Request(base + path, method=method, data=body,
                                     headers={'Authorization': f'Bearer {secret}',
                                              'Content-Type': 'application/json'})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b'null')
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


@pytest.fixture
def logs(caplog):
    caplog.set_level(logging.DEBUG)
    return caplog


def test_no_secret_reaches_a_log_line(app, server, logs):
    app.config['SESSION_COOKIE_SECURE'] = False  # plain http on loopback
    person = Browser(server)
    signup = person.csrf('/signup')
    person.open('/signup', {'email': 'alice@example.com', 'handle': 'alice',
                            'password': PASSWORD, 'csrf_token': signup})
    tokens = '/user/alice/settings/tokens'
    status, page = person.open(tokens, {'csrf_token': person.csrf(tokens)})
    assert status == 200
    ui_secret = re.search(r'value="(pst_[0-9A-Za-z]{36})"', page).group(1)
    assert bearer(server, '/api/v0/actor', ui_secret)[0] == 200
    status, created = bearer(server, '/api/v0/user/alice/token', ui_secret, 'POST')
    assert status == 201
    api_secret = created['token']
    assert bearer(server, '/api/v0/actor', api_secret[:-1] + 'x')[0] == 401

    started = json.loads(person.open('/api/v0/login/token', b'', 'POST')[1])
    status, confirmed = person.open(f'/api/v0/login/token/{started["id"]}', b'', 'PATCH',
                                    {'X-CSRFToken': person.csrf('/user/alice/settings/profile')})
    code = json.loads(confirmed)['code']
    status, exchanged = person.open(f'/api/v0/login/token/{started["id"]}?code={code}')
    temporary = json.loads(exchanged)['token']
    assert bearer(server, '/api/v0/actor', temporary)[0] == 200

    written = logs.text
    assert 'GET /api/v0/actor' in written  # the request log was captured
    cookie = person.cookie(app.config['SESSION_COOKIE_NAME'])
    for secret in (ui_secret, api_secret, temporary, cookie, PASSWORD):
        assert secret not in written


def test_no_secret_carrying_url_reaches_a_log_line(app, server, logs):
    """Every URL that carries a secret, driven over real HTTP: the request log (and any other
    line) shows [redacted] where the secret was."""
    app.config['SESSION_COOKIE_SECURE'] = False  # plain http on loopback
    person = Browser(server)
    person.open('/signup', {'email': 'alice@example.com', 'handle': 'alice',
                            'password': PASSWORD, 'csrf_token': person.csrf('/signup')})
    started = json.loads(person.open('/api/v0/login/token', b'', 'POST')[1])
    _, confirmed = person.open(f'/api/v0/login/token/{started["id"]}', b'', 'PATCH',
                               {'X-CSRFToken': person.csrf('/user/alice/settings/profile')})
    code = json.loads(confirmed)['code']
    assert person.open(f'/api/v0/login/token/{started["id"]}?code={code}')[0] == 200

    with database.db.connection_context():
        alice = models.User.get(models.User.handle == 'alice')
    unsubscribe = announcements.unsubscribe_token(alice.id, 'product_updates')
    assert Browser(server).open(f'/unsubscribe/{unsubscribe}')[0] == 200
    assert Browser(server).open(f'/unsubscribe/{unsubscribe}',
                                b'List-Unsubscribe=One-Click', 'POST')[0] == 200
    # Links other parts send (email verification, organization invitations): whatever they
    # answer, their tokens are not written down either, nor one carried in a login's next=.
    link_token = models.minted(secrets.token_urlsafe(24))
    for path in (f'/signup/confirm?t={link_token}',
                 f'/org/acme/member/invite/confirm?t={link_token}',
                 f'/api/v0/org/acme/member/invite/confirm?t={link_token}&x=1',
                 '/login?next=' + quote(f'/org/acme/member/invite/confirm?t={link_token}',
                                        safe='')):
        Browser(server).open(path)

    written = logs.text
    assert f'?code=[redacted] HTTP' in written
    assert 'POST /unsubscribe/[redacted] HTTP' in written
    assert 'GET /signup/confirm?t=[redacted] HTTP' in written
    assert '/api/v0/org/acme/member/invite/confirm?t=[redacted]&x=1 HTTP' in written
    for secret in (code, link_token, *unsubscribe.split('.')):
        assert secret not in written


@pytest.mark.parametrize('line, expected', [
    ('"GET /api/v0/login/token/l_1?code=123456 HTTP/1.1" 200 -',
     '"GET /api/v0/login/token/l_1?code=[redacted] HTTP/1.1" 200 -'),
    ('GET /api/v0/login/token/l_1?%63ode=123456&a=b HTTP/1.1',  # however the name is spelled
     'GET /api/v0/login/token/l_1?%63ode=[redacted]&a=b HTTP/1.1'),
    ('POST /unsubscribe/WyJ1Il0.c2lnbmF0dXJl?x=1 HTTP/1.1',
     'POST /unsubscribe/[redacted]?x=1 HTTP/1.1'),
    ('GET /login?next=%2Fsignup%2Fconfirm%3Ft%3Dsecret HTTP/1.1',
     'GET /login?next=/signup/confirm%3Ft%3D%5Bredacted%5D HTTP/1.1'),
    ('GET /user/alice/settings/audit?next_token=abc&action_type=x HTTP/1.1',
     'GET /user/alice/settings/audit?next_token=abc&action_type=x HTTP/1.1'),  # not a secret
    ('Delete workspace analytics? Yes', 'Delete workspace analytics? Yes'),
])
def test_redaction_knows_the_secret_carrying_parameters_and_paths(line, expected):
    assert views.redact_secrets(line) == expected


def test_an_error_logged_for_a_secret_url_is_redacted(app, logs):
    app.logger.error('Exception on %s [%s]', '/unsubscribe/WyJ1Il0.c2lnbmF0dXJl', 'GET')
    assert 'Exception on /unsubscribe/[redacted] [GET]' in logs.text
    assert 'c2lnbmF0dXJl' not in logs.text
