"""Secrets stay out of the logs: every log line written while they are made and used."""
import http.cookiejar
import json
import logging
import re
import urllib.error
import urllib.request

import pytest

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
