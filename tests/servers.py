"""gunicorn for the tests that need the app as it runs in production (several worker
processes): one way to start it on a free loopback port, wait until it answers and stop it;
and the plain HTTP clients those tests talk to it with."""
import http.client
import http.cookiejar
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from bs4 import BeautifulSoup

import database
from tests.conftest import TEST_PASSWORD_KEY
from tests.helpers import PASSWORD

ROOT = Path(__file__).resolve().parents[1]
GUNICORN = Path(sys.executable).parent / 'gunicorn'
SECRET_KEY = 'concurrency-test'
START_DEADLINE = 60  # seconds for the first answer: a server that never comes up fails the test
STOP_DEADLINE = 15  # seconds for a graceful stop before the whole process group is killed
TOO_MANY = 'Too many attempts. Wait a few minutes, then try again.'
NO_MATCH = 'That email or handle and password do not match. Check them and try again.'


def server_env(database_url, **extra):
    """The environment of an app process (server or worker) on `database_url`: test secrets,
    plain-HTTP cookies, and no Gravatar look-ups (signups must not reach the internet)."""
    return {**os.environ, 'DATABASE_URL': database_url, 'SECRET_KEY': SECRET_KEY,
            'SECURE_COOKIES': '0', 'GRAVATAR_ENABLED': '0',
            'DATABASE_PASSWORD_KEYS': TEST_PASSWORD_KEY, **extra}


@contextmanager
def gunicorn(database_url, log_path, workers=4, threads=1, **extra):
    """gunicorn serving the app on `database_url` with `workers` sync workers (or, with
    `threads` above 1, threaded workers each answering that many requests at once), its output
    appended to `log_path`, `extra` in its environment; yields (base URL, the master process)
    once it answers.

    The listening socket is bound here (port 0: the kernel picks a free one) and handed over,
    so no other process can take the port between choosing and binding it. The server runs in
    its own process group, so `stop(process, kill=True)` can kill -9 all of it at once."""
    with socket.socket() as listener, open(log_path, 'ab') as log:
        listener.bind(('127.0.0.1', 0))
        listener.listen(128)
        listener.set_inheritable(True)
        process = subprocess.Popen(
            [str(GUNICORN), '-w', str(workers), '--threads', str(threads),
             '-b', f'fd://{listener.fileno()}', '--timeout', '30', 'app:create_app()'],
            cwd=ROOT, env=server_env(database_url, **extra), stdout=log,
            stderr=subprocess.STDOUT, pass_fds=(listener.fileno(),), start_new_session=True)
        try:
            port = listener.getsockname()[1]
            wait_until_answering(process, port, log_path)
            yield f'http://127.0.0.1:{port}', process
        finally:
            stop(process)


def wait_until_answering(process, port, log_path):
    """Return once the server answers a request (any status); fail with its log if it exits
    first or does not answer within START_DEADLINE.

    Connections queue on the socket until a worker is up, so each try is one request that
    waits for it, not a poll for the port; a try that times out only rechecks the process."""
    deadline = time.monotonic() + START_DEADLINE
    while True:
        if process.poll() is not None:
            raise AssertionError(f'gunicorn exited with {process.returncode} before answering:\n'
                                 + Path(log_path).read_text(errors='replace')[-3000:])
        connection = http.client.HTTPConnection('127.0.0.1', port, timeout=2)
        try:
            connection.request('GET', '/login')
            connection.getresponse().read()
            return
        except TimeoutError:
            if time.monotonic() > deadline:
                raise AssertionError(f'gunicorn did not answer within {START_DEADLINE} s:\n'
                                     + Path(log_path).read_text(errors='replace')[-3000:])
        finally:
            connection.close()


def stop(process, kill=False):
    """End the server and its workers: SIGTERM to the master and a wait for it to finish what
    it is doing, then SIGKILL to the whole process group (at once when `kill`)."""
    if process.poll() is None and not kill:
        process.terminate()
        try:
            process.wait(timeout=STOP_DEADLINE)
            return
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=10)


def prepare_database(path):
    """A migrated SQLite file at `path`."""
    connection = database.open_database(f'sqlite:///{path}')
    database.migrate(connection)
    connection.close()


def call(base, method, path, headers=None, body=None, timeout=30):
    """One HTTP request on a fresh connection; (status, headers, text)."""
    url = urllib.parse.urlsplit(base)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode('utf-8',
                                                                                    'replace')
    finally:
        connection.close()


def api(base, secret, method, path, payload=None):
    headers = {'Authorization': f'Bearer {secret}'}
    body = None
    if payload is not None:
        headers['Content-Type'] = 'application/json'
        body = json.dumps(payload)
    return call(base, method, '/api/v0' + path, headers, body)


class Browser:
    """A cookie-keeping HTTP client that does not follow redirects, like a form post would."""

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    def __init__(self, base):
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), self._NoRedirect)

    def open(self, path, form=None):
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        try:
            with self.opener.open(self.base + path, data=data, timeout=30) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def csrf(self, path):
        status, body = self.open(path)
        assert status == 200, (path, status)
        field = BeautifulSoup(body, 'html.parser').find('input', attrs={'name': 'csrf_token'})
        return field['value']

    def cookie_header(self):
        return '; '.join(f'{c.name}={c.value}' for c in self.jar)


def post_create(base, path, cookie, csrf, htmx):
    """One raw POST to New Token; returns (status, headers, body)."""
    url = urllib.parse.urlsplit(base)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    headers = {'Cookie': cookie, 'Content-Type': 'application/x-www-form-urlencoded'}
    if htmx:
        headers['HX-Request'] = 'true'
    try:
        connection.request('POST', path, body=urllib.parse.urlencode({'csrf_token': csrf}),
                           headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode()
    finally:
        connection.close()


def sign_up(base, handle):
    person = Browser(base)
    status, _ = person.open('/signup', {'email': f'{handle}@example.com', 'handle': handle,
                                        'password': PASSWORD,
                                        'csrf_token': person.csrf('/signup')})
    assert status == 302
    return person


def attempt_login(base, login, password='wrong password'):
    """One login from a fresh browser; returns (status, the form's error message)."""
    person = Browser(base)
    status, body = person.open('/login', {'email': login, 'password': password,
                                          'csrf_token': person.csrf('/login')})
    error = BeautifulSoup(body, 'html.parser').find(class_='form-error')
    return status, error.get_text(strip=True) if error else None
