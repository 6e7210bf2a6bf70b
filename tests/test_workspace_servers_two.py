"""More than one workspace server, and servers that come and go: a second embedded PostgreSQL
beside the run's one, placement between them, a rotation carried to both, a server stopped in
the middle of a rotation and started again, and the embedded server the app starts for itself
when WORKSPACE_DATABASE_URL is unset. Each test starts (and stops) a real server of its own."""
import datetime

import flask
import pytest

import database
import embedded
import models
import propagation
import workspace_servers
from app import create_app
from tests.conftest import QUICK_PASSWORD_HASH, TEST_PASSWORD_KEY
from tests.helpers import make_user, run_jobs
from tests.test_real_workspaces import (WRONG_PASSWORD, connect, pending_jobs, provision,
                                        refusal, rotate, shown, states, who)
from workspaces import DatabasePassword, PropagationJob

pytestmark = pytest.mark.slow


def make_app(database_url, workspace_database_url):
    app = create_app({
        'TESTING': True,
        'SECRET_KEY': 'test secret key',
        'DATABASE_URL': database_url,
        'GRAVATAR_ENABLED': False,
        'DATABASE_PASSWORD_KEYS': TEST_PASSWORD_KEY,
        'PASSWORD_HASH_METHOD': QUICK_PASSWORD_HASH,
        'WORKSPACE_DATABASE_URL': workspace_database_url,
    })
    database.migrate(database.db.obj)
    return app


@pytest.fixture
def second(tmp_path):
    """A second workspace server, this test's own."""
    with embedded.EmbeddedPostgres(tmp_path / 'second', durable=False) as server:
        yield server


@pytest.fixture
def two(database_url, workspace_server, second):
    """An app whose workspaces go to the run's server and `second`, in that order."""
    yield make_app(database_url, f'{workspace_server.url},{second.url}')
    database.db.close()


def key(server):
    return f'127.0.0.1:{server.port}'


def database_names(server):
    with connect(server.url) as connection:
        return {name for (name,) in connection.execute('SELECT datname FROM pg_database')}


# Placement

def test_new_workspaces_alternate_between_servers_and_each_string_reaches_its_own(
        two, workspace_server, second):
    user = make_user()
    first_key, second_key = key(workspace_server), key(second)
    made = provision(user, 'a1', 'a2', 'a3', 'a4')
    assert [w.server for w in made] == [first_key, second_key, first_key, second_key]
    with database.db.connection_context():
        made[0].remove()
    [a5] = provision(user, 'a5')
    assert a5.server == first_key, 'the one with fewer workspaces'
    assert run_jobs() == 2, 'one job per server'

    for workspace in made[1:] + [a5]:
        server = second if workspace.server == second_key else workspace_server.embedded
        other = workspace_server.embedded if server is second else second
        string = shown(workspace)
        assert f':{server.port}/{workspace.database_name}?hostaddr=127.0.0.1' in string
        assert who(string) == ('alice', workspace.database_name)
        assert workspace.database_name in database_names(server)
        assert workspace.database_name not in database_names(other)
    assert made[0].database_name not in database_names(workspace_server.embedded)


def test_a_rotation_converges_on_both_servers(two, workspace_server, second):
    user = make_user()
    on_first, on_second = provision(user, 'analytics', 'staging')
    run_jobs()
    old = {w.handle: shown(w) for w in (on_first, on_second)}
    rotate(user)
    assert sorted(job.server for job in pending_jobs()) == sorted(
        [key(workspace_server), key(second)])
    assert run_jobs() == 2
    assert states(user) == {'analytics': 'applied', 'staging': 'applied'}
    for workspace in (on_first, on_second):
        assert WRONG_PASSWORD in refusal(old[workspace.handle])
        assert who(shown(workspace)) == ('alice', workspace.database_name)


# A server that goes away

def test_a_server_stopped_mid_rotation_keeps_its_job_and_converges_once_back(
        two, workspace_server, second, monkeypatch):
    user = make_user()
    on_first, on_second = provision(user, 'analytics', 'staging')
    run_jobs()
    with connect(shown(on_second)) as connection:
        connection.execute("CREATE TABLE notes AS SELECT 'kept' AS body")
    old = shown(on_second)
    rotate(user)
    with database.db.connection_context():
        password = DatabasePassword.for_user(user.id).password

    converge = workspace_servers.Server.converge

    def stopped_midway(server, connection, desired):
        if server.key == key(second):
            second.stop()  # its open sessions, ours among them, end now
        converge(server, connection, desired)

    monkeypatch.setattr(workspace_servers.Server, 'converge', stopped_midway)
    started = models.utcnow()
    assert run_jobs() == 2
    monkeypatch.undo()
    assert not second.running
    assert states(user) == {'analytics': 'applied', 'staging': 'pending'}
    assert who(shown(on_first)) == ('alice', on_first.database_name)
    [job] = pending_jobs()
    assert job.server == key(second) and job.attempts == 1
    assert job.last_error and password not in job.last_error
    assert job.run_after >= started + datetime.timedelta(seconds=2), 'backs off'
    assert run_jobs() == 0, 'not due before its backoff'

    with database.db.connection_context():  # due again, while the server is still down
        PropagationJob.update(run_after=models.utcnow()).execute()
    retried = models.utcnow()
    assert run_jobs() == 1
    [job] = pending_jobs()
    assert job.attempts == 2 and job.last_error == 'OperationalError'
    assert job.run_after >= retried + datetime.timedelta(seconds=4), 'backs off more'
    result = two.test_cli_runner().invoke(args=['workspaces', 'check'])
    assert result.output.splitlines() == [
        f'{key(workspace_server)}: 1 workspace(s) of 1 user(s); 0 differ from the metadata, '
        '0 job(s) queued',
        f'{key(second)}: 1 workspace(s); the server did not answer (OperationalError); its jobs '
        'stay pending']

    port = second.port
    second.start()
    assert second.port == port
    with database.db.connection_context():
        PropagationJob.update(run_after=models.utcnow()).execute()
    assert run_jobs() == 1
    assert pending_jobs() == []
    assert states(user) == {'analytics': 'applied', 'staging': 'applied'}
    assert WRONG_PASSWORD in refusal(old)
    with connect(shown(on_second)) as connection:
        assert connection.execute('SELECT current_user, body FROM notes').fetchall() == [
            ('alice', 'kept')]


# The embedded default

def test_unset_the_app_starts_its_own_server_under_instance_and_stops_it(
        database_url, tmp_path_factory, monkeypatch):
    monkeypatch.delenv('WORKSPACE_DATABASE_URL')
    # A short path: see the next test.
    instance = tmp_path_factory.mktemp('app') / 'instance'
    monkeypatch.setattr(flask.Flask, 'auto_find_instance_path',
                        lambda self: str(instance))
    make_app(database_url, '')
    [server] = models.Config.workspace_servers
    try:
        assert server.key == 'embedded' and not server.running
        assert propagation.start_servers() is models.Config.workspace_servers
        assert server.running
        assert server.embedded.directory == instance / 'workspace-postgres'
        user = make_user()
        [analytics] = provision(user, 'analytics')
        assert analytics.server == 'embedded'
        assert run_jobs() == 1
        string = shown(analytics)
        assert f'@alice-analytics.workspaces.penstock.test:{server.port}/' in string
        assert who(string) == ('alice', analytics.database_name)
    finally:
        server.stop()
        database.db.close()
    assert not server.running
    assert 'Connection refused' in refusal(string)


def test_the_embedded_server_starts_in_a_deep_instance_directory(tmp_path):
    """A clone at /home/someone/src/github.com/some-organization/penstock-account-settings
    is enough to make the socket's path too long for PostgreSQL."""
    deep = tmp_path / 'home' / 'someone' / 'src' / 'github.com' / 'some-organization'
    server = embedded.EmbeddedPostgres(deep / 'penstock' / 'instance' / 'workspace-postgres',
                                       durable=False)
    with server:
        assert server.running
        with connect(server.url) as connection:
            assert connection.execute('SELECT 1').fetchone() == (1,)
    assert not server.running


def test_a_process_that_did_not_start_the_embedded_server_still_reaches_it(
        database_url, tmp_path_factory, monkeypatch):
    """As `flask --app app workspaces check` (or a web process) beside `make run`, whose
    process started the server and runs the worker."""
    monkeypatch.delenv('WORKSPACE_DATABASE_URL')
    instance = tmp_path_factory.mktemp('app') / 'instance'
    monkeypatch.setattr(flask.Flask, 'auto_find_instance_path',
                        lambda self: str(instance))
    with embedded.EmbeddedPostgres(instance / 'workspace-postgres', durable=False) as running:
        app = make_app(database_url, '')
        try:
            user = make_user()
            [analytics] = provision(user, 'analytics')
            run_jobs(workspace_servers.Servers([workspace_servers.EmbeddedServer(running)]))
            string = shown(analytics)
            result = app.test_cli_runner().invoke(args=['workspaces', 'check'])
        finally:
            database.db.close()
        assert running.running, 'the check left it running'
        assert f'@alice-analytics.workspaces.penstock.test:{running.port}/' in string
        assert who(string) == ('alice', analytics.database_name)
        assert result.output == ('embedded: 1 workspace(s) of 1 user(s); 0 differ from the '
                                 'metadata, 0 job(s) queued\n')
