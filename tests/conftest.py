"""Fixtures: a fresh app on an on-disk database, clients, users and real logins.

The database is SQLite unless PENSTOCK_TEST_DATABASE names a PostgreSQL server (a
postgresql:// URL of a database the tests may create and drop databases from); then every
test gets fresh databases of its own there."""
import asyncio
import collections
import email.parser
import email.policy
import logging
import os
import queue
import re
import secrets
import socket
import subprocess
import threading
import time
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from aiosmtpd.controller import Controller
from cryptography.fernet import Fernet
from psycopg import sql
from werkzeug.serving import make_server

import credentials
import database
import embedded
import models
from app import create_app
from tests.helpers import PASSWORD, Api, log_in, make_user

SESSION_COOKIE = '__Host-penstock_session'  # the `app` fixture's: its cookies are secure
TEST_PASSWORD_KEY = Fernet.generate_key().decode()
# scrypt at werkzeug's cost (n=2**15) takes about 80 ms a hash, and most tests sign up and log
# in: hashing was 60% of `make check`. The in-process app hashes at n=2**10 (about 2 ms); a
# check reads the cost from the hash it checks, so logins get as cheap. gunicorn servers
# (tests/servers.py) and the browser tests' live server keep the full cost.
QUICK_PASSWORD_HASH = 'scrypt:1024:8:1'
TEST_DATABASE = os.environ.get('PENSTOCK_TEST_DATABASE', '')
ON_POSTGRES = TEST_DATABASE.startswith(('postgres://', 'postgresql://'))
sqlite_only = pytest.mark.skipif(ON_POSTGRES, reason='checks SQLite itself (its file or '
                                                     'pragmas); this run is on PostgreSQL')


# Every secret made while the suite runs, and a check after each test that no log record
# written during it holds one (tests/test_logs.py follows one flow closely; this covers the
# whole run, in-process servers and browser tests included; gunicorn subprocesses log to
# their own files and are not covered).
MADE_SECRETS = set()
SECRET_PASSWORDS = (PASSWORD, 'penstock-demo')
_WORDS = re.compile(r'[A-Za-z0-9_-]+')


# CLI login codes (six digits) are looked for as words in log lines only: mail holds other runs
# of digits (a Message-ID's), which a substring check would mistake for one.
MADE_CODES = set()
_CODE = re.compile(r'[0-9]{6}')


def _note(secret):
    """Remember `secret` by its words: a signed link's token (payload.signature) is two, and a
    log line that holds either holds part of it."""
    if _CODE.fullmatch(secret):
        MADE_CODES.add(secret)
    else:
        MADE_SECRETS.update(_WORDS.findall(secret))


@pytest.fixture(scope='session', autouse=True)
def _note_secrets():
    """Remember each token, session secret, database password, CLI login code and unsubscribe
    link token as it is made."""
    models.SECRET_OBSERVERS.append(_note)
    root = logging.getLogger()
    level, root.level = root.level, min(root.level, logging.INFO)
    yield
    root.level = level
    models.SECRET_OBSERVERS.remove(_note)


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage() + (self.format(record) if record.exc_info else ''))


def _holds_a_made_secret(words):
    return not (MADE_SECRETS.isdisjoint(words) and MADE_CODES.isdisjoint(words))


@pytest.fixture(autouse=True)
def no_secret_in_logs(_note_secrets):
    """Fail the test in which a log record holding a secret was written."""
    handler = _Lines()
    logging.getLogger().addHandler(handler)
    yield
    logging.getLogger().removeHandler(handler)
    leaks = [line for line in handler.lines
             if _holds_a_made_secret(_WORDS.findall(line))
             or any(password in line for password in SECRET_PASSWORDS)]
    assert not leaks, f'secrets in log lines: {leaks[:3]}'


@pytest.fixture(autouse=True)
def _close_databases(monkeypatch):
    """After each test, close every connection of every database opened during it: a pool
    keeps its connections after close(), and one left to the garbage collector warns (an
    error here) from whichever later test it happens in."""
    opened, open_database = [], database.open_database

    def noted(url):
        opened.append(open_database(url))
        return opened[-1]

    monkeypatch.setattr(database, 'open_database', noted)
    yield
    for each in opened:
        getattr(each, 'close_all', each.close)()


def postgres_admin(statement):
    with psycopg.connect(TEST_DATABASE, autocommit=True) as connection:
        connection.execute(statement)


def postgres_url(database):
    return urlunsplit(urlsplit(TEST_DATABASE)._replace(path='/' + database))


@pytest.fixture(scope='session')
def _postgres_template():
    """A database with every migration applied, copied for each test: copying it takes a
    tenth of the time that migrating an empty one does."""
    if not ON_POSTGRES:
        yield None
        return
    template = f'penstock_template_{os.getpid()}'
    postgres_admin(f'DROP DATABASE IF EXISTS {template}')
    postgres_admin(f'CREATE DATABASE {template}')
    migrated = database.open_database(postgres_url(template))
    database.migrate(migrated)
    migrated.close_all()  # a pooled connection left open would stop every copy of it
    yield template
    postgres_admin(f'DROP DATABASE IF EXISTS {template} WITH (FORCE)')


@pytest.fixture
def make_database_url(tmp_path, _postgres_template):
    """Make fresh databases for this test: `make('name')` gives the URL of one, a SQLite
    file under tmp_path or a new database on the PostgreSQL test server (dropped after the
    test, whoever is still connected). `empty=True`: no tables at all, even on PostgreSQL,
    where the others are already migrated (on SQLite they start empty either way)."""
    made = []

    def make(name='penstock', empty=False):
        if not ON_POSTGRES:
            return f'sqlite:///{tmp_path}/{name}.db'
        made.append(f'penstock_test_{os.getpid()}_{secrets.token_hex(6)}')
        postgres_admin(f'CREATE DATABASE {made[-1]}'
                       + ('' if empty else f' TEMPLATE {_postgres_template}'))
        return postgres_url(made[-1])

    yield make
    for name in made:
        postgres_admin(f'DROP DATABASE IF EXISTS {name} WITH (FORCE)')


@pytest.fixture
def database_url(make_database_url):
    """The URL of this test's own fresh database."""
    return make_database_url()


@pytest.fixture(scope='session', autouse=True)
def workspace_server(tmp_path_factory):
    """A real PostgreSQL server for workspaces for the whole run: embedded.py's, the one
    `make run` starts, durability off. Every app (and every server a test starts as a
    subprocess) is given it by WORKSPACE_DATABASE_URL."""
    server = embedded.EmbeddedPostgres(tmp_path_factory.mktemp('workspace-postgres'),
                                       durable=False)
    with server:
        MADE_SECRETS.add(urlsplit(server.url).password)  # no log line may hold it either
        os.environ['WORKSPACE_DATABASE_URL'] = server.url
        try:
            with psycopg.connect(server.url, autocommit=True) as connection:
                yield WorkspaceServer(server, connection)
        finally:
            del os.environ['WORKSPACE_DATABASE_URL']


class WorkspaceServer:
    """The run's workspace server, with an admin connection to look into its catalogs."""

    def __init__(self, embedded, connection):
        self.embedded, self.connection = embedded, connection
        self.url, self.port = embedded.url, embedded.port

    def query(self, statement, params=None):
        return self.connection.execute(statement, params).fetchall()

    def marked(self):
        """How many roles and databases of Penstock users the server holds."""
        return self.query("SELECT count(*) FROM pg_shdescription "
                          "WHERE description LIKE 'penstock user %'")[0][0]

    def clear(self):
        """Drop every database and role of a Penstock user: each test starts with none (the
        next test's alice is another user, and her role's name would be taken)."""
        for (name,) in self.query(
                "SELECT d.datname FROM pg_database d JOIN pg_shdescription s "
                "ON s.objoid = d.oid AND s.classoid = 'pg_database'::regclass "
                "WHERE s.description LIKE 'penstock user %'"):
            self.connection.execute(sql.SQL('DROP DATABASE {} WITH (FORCE)')
                                    .format(sql.Identifier(name)))
        for (name,) in self.query(
                "SELECT r.rolname FROM pg_roles r JOIN pg_shdescription s "
                "ON s.objoid = r.oid AND s.classoid = 'pg_authid'::regclass "
                "WHERE s.description LIKE 'penstock user %'"):
            self.connection.execute(sql.SQL('DROP ROLE {}').format(sql.Identifier(name)))


@pytest.fixture(autouse=True)
def _clear_workspace_server(workspace_server):
    """After each test that made something on the workspace server, drop it (one cheap
    query for the others)."""
    yield
    if workspace_server.marked():
        workspace_server.clear()


@pytest.fixture
def app(database_url):
    app = create_app({
        'TESTING': True,
        'SECRET_KEY': 'test secret key',
        'DATABASE_URL': database_url,
        'GRAVATAR_ENABLED': False,  # tests that look avatars up start their own server
        'DATABASE_PASSWORD_KEYS': TEST_PASSWORD_KEY,
        'PASSWORD_HASH_METHOD': QUICK_PASSWORD_HASH,
    })
    database.migrate(database.db.obj)
    yield app
    database.db.close()


@pytest.fixture
def client(app):
    return app.test_client()


def database_dump():
    """Every row of the app's database as text, to search for what must never be stored."""
    with database.db.connection_context():
        if not ON_POSTGRES:
            return '\n'.join(database.db.obj.connection().iterdump())
        return '\n'.join(row[0] for table in database.db.get_tables() for row in
                         database.db.execute_sql(f'SELECT t::text FROM "{table}" t'))


@pytest.fixture
def user(app):
    return make_user()


@pytest.fixture
def logged_in(client, user):
    response = log_in(client, user.handle)
    assert response.status_code == 302
    return user


@pytest.fixture
def other_user(app):
    return make_user('bob@example.com', 'bob')


@pytest.fixture
def server(app):
    """This test's app served over real HTTP on loopback, for clients outside the process."""
    httpd = make_server('127.0.0.1', 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), name='test-server')
    thread.start()
    try:
        yield f'http://127.0.0.1:{httpd.server_port}'
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


# A throwaway Redis for the tests whose rate limits are shared (RATELIMIT_STORAGE_URI).
REDIS_SERVER = os.environ.get('PENSTOCK_REDIS_SERVER', '/usr/bin/redis-server')
REDIS_START_DEADLINE = 30  # seconds until redis-server says it accepts connections
REDIS_PORT_TRIES = 3  # another process may take the free port before redis-server binds it


class RedisServer:
    """A throwaway redis-server on a free loopback port, its working directory `directory`,
    nothing saved to disk, no configuration file; a test may stop it and start it again (on
    the same port, empty) to show what an outage does."""

    def __init__(self, directory):
        if not os.access(REDIS_SERVER, os.X_OK):
            pytest.fail(f'redis-server not found at {REDIS_SERVER}: run '
                        "'sudo apt-get install redis-server' (make test does) "
                        'or set PENSTOCK_REDIS_SERVER')
        self.directory = directory
        for _ in range(REDIS_PORT_TRIES):
            self.port = _free_port()
            self.process, self.pump, log = _start_redis(self.port, directory)
            if self.process is not None:
                break
            if 'Address already in use' not in log:
                pytest.fail(f'redis-server did not start:\n{log}')
        else:
            pytest.fail(f'redis-server found no free port in {REDIS_PORT_TRIES} tries:\n{log}')
        self.url = f'redis://127.0.0.1:{self.port}/0'

    def stop(self):
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        _close_output(self.process, self.pump)
        self.process = None

    def start(self):
        """Start it again on its port (stopped first)."""
        self.stop()
        self.process, self.pump, log = _start_redis(self.port, self.directory)
        if self.process is None:
            pytest.fail(f'redis-server did not start again on port {self.port}:\n{log}')


@pytest.fixture
def redis_server(tmp_path):
    """A throwaway Redis (RedisServer) for this test, stopped when the test ends."""
    server = RedisServer(tmp_path)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server):
    """The URL of this test's throwaway Redis."""
    return redis_server.url


def _free_port():
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


def _start_redis(port, directory):
    """Start redis-server on `port`; (process, the thread reading its output, log so far)
    once it accepts connections, or (None, None, its log) if it exited first. Its output is
    read as it comes, no polling."""
    process = subprocess.Popen(
        [REDIS_SERVER, '--bind', '127.0.0.1', '--port', str(port), '--dir', str(directory),
         '--save', '', '--appendonly', 'no', '--daemonize', 'no'],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = queue.Queue()
    pump = threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True)
    pump.start()
    seen = []
    deadline = time.monotonic() + REDIS_START_DEADLINE
    while True:
        try:
            line = lines.get(timeout=max(0, deadline - time.monotonic()))
        except queue.Empty:
            process.kill()
            process.wait(timeout=10)
            _close_output(process, pump)
            pytest.fail(f'redis-server did not start within {REDIS_START_DEADLINE} s:\n'
                        + ''.join(seen))
        if line is None:  # it exited
            process.wait(timeout=10)
            _close_output(process, pump)
            return None, None, ''.join(seen)
        seen.append(line)
        if 'Ready to accept connections' in line:
            return process, pump, ''.join(seen)


def _pump(stream, lines):
    """Read the server's output to the end (so it never blocks on a full pipe)."""
    for line in stream:
        lines.put(line)
    lines.put(None)


def _close_output(process, pump):
    """Once the server has exited its output ends: let the reader finish, then close it."""
    pump.join(timeout=10)
    process.stdout.close()


# The API's people and Alice's token, read afresh from the database (`user` and `other_user`
# are the objects sign-up returned).

@pytest.fixture
def alice(user):
    return models.User.get_by_id(user.id)


@pytest.fixture
def bob(other_user):
    return models.User.get_by_id(other_user.id)


@pytest.fixture
def token(alice):
    """Alice's first token and its secret."""
    return credentials.Token.issue(alice)


@pytest.fixture
def api(app, token):
    """Alice's API client, sending her first token."""
    return Api(app, token[1])


# A real SMTP server on loopback (aiosmtpd) for the mail tests.

class SMTPServer:
    """aiosmtpd on a loopback port, keeping what it is sent as parsed messages (`received`,
    email.message.EmailMessage). `refuse(*answers)` answers the next RCPTs with those (e.g.
    '451 4.3.0 Try again later', '550 5.1.1 No such user'), one each, then accepts again;
    `hold()` makes it take the next message in but not answer until `release()`;
    `down()` and `up()` stop and restart it on the same port."""

    def __init__(self, port):
        self.port, self.url = port, f'smtp://127.0.0.1:{port}'
        self.received, self.answers = [], collections.deque()
        self.raw = []  # each message's bytes as they came
        self.arrived = threading.Condition()
        self.holding, self.released = False, threading.Event()
        self.controller = None

    def up(self):
        self.controller = Controller(_SMTPHandler(self), hostname='127.0.0.1', port=self.port)
        self.controller.start()

    def down(self):
        self.controller.stop()
        self.controller = None

    def refuse(self, *answers):
        self.answers.extend(answers)

    def hold(self):
        self.holding = True
        self.released.clear()

    def release(self):
        self.holding = False
        self.released.set()

    def wait_for(self, count, timeout=30):
        """The messages received once there are `count` of them (fails after `timeout` s)."""
        with self.arrived:
            if not self.arrived.wait_for(lambda: len(self.received) >= count, timeout):
                pytest.fail(f'the SMTP server received {len(self.received)} message(s), '
                            f'not {count}, within {timeout} s')
            return list(self.received)


class _SMTPHandler:
    def __init__(self, server):
        self.server = server

    async def handle_RCPT(self, smtp, session, envelope, address, rcpt_options):
        if self.server.answers:
            return self.server.answers.popleft()
        envelope.rcpt_tos.append(address)
        return '250 OK'

    async def handle_DATA(self, smtp, session, envelope):
        message = email.parser.BytesParser(policy=email.policy.default).parsebytes(
            envelope.original_content)
        with self.server.arrived:
            self.server.raw.append(envelope.original_content)
            self.server.received.append(message)
            self.server.arrived.notify_all()
        if self.server.holding:  # taken in, not yet acknowledged: the sender waits
            await asyncio.get_running_loop().run_in_executor(None, self.server.released.wait)
        return '250 Message accepted for delivery'


@pytest.fixture
def smtp_server():
    """A real SMTP server on a free loopback port for this test (see SMTPServer)."""
    server = SMTPServer(_free_port())
    server.up()
    try:
        yield server
    finally:
        server.release()
        if server.controller is not None:
            server.down()


@pytest.fixture
def smtp_url(smtp_server):
    """SMTP_URL for this test's SMTP server."""
    return smtp_server.url
