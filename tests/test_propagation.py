"""Carrying every change of a user's workspaces to their workspace server: the durable jobs,
the worker loop (on the run's real server, whose catalogs are read afterwards), and `flask
--app app worker` as a process that can be killed mid-way or stopped with SIGTERM."""
import contextlib
import datetime
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import database
import models
import propagation
import workspace_servers
from tests.conftest import TEST_PASSWORD_KEY
from tests.helpers import (
    LEASE,
    provision_and_rotate,
    run_jobs,
    user_locked,
    waiting_for_a_user_lock,
)
from workspaces import PROPAGATION_BACKOFF_MAX, DatabasePassword, PropagationJob, Workspace

ROOT = Path(__file__).resolve().parents[1]


class Flaky:
    """A stand-in for the configured servers: `servers[key]` is itself, in front of the real
    server of that key. It notes every converge (role, password version, databases), runs
    `during(desired)` in it with the user's lock held, and fails the first `failures` of them
    with an error quoting a statement and the password, as a driver's message could."""

    def __init__(self, failures=0, during=None):
        self.failures, self.during, self.calls = failures, during, []
        self.server = None

    def __getitem__(self, key):
        self.server = models.Config.workspace_servers[key]
        return self

    def holding(self, user_id):
        return self.server.holding(user_id)

    def converge(self, connection, desired):
        self.calls.append((desired.role, desired.version, sorted(desired.databases)))
        if self.during:
            self.during(desired)
        if len(self.calls) <= self.failures:
            raise ConnectionError(f'could not run ALTER ROLE {desired.role} PASSWORD '
                                  f'{desired.password!r}')
        self.server.converge(connection, desired)


def password_of(user):
    with database.db.connection_context():
        row = DatabasePassword.for_user(user.id)
        return row.version, row.password


def workspace(workspace_id):
    with database.db.connection_context():
        return Workspace.get_or_none(Workspace.id == workspace_id)


def jobs(**where):
    with database.db.connection_context():
        query = PropagationJob.select().order_by(PropagationJob.id)
        for field, value in where.items():
            query = query.where(getattr(PropagationJob, field) == value)
        return list(query)


def roles(workspace_server):
    """{role: (its mark, its SCRAM verifier, can log in, superuser, createdb, createrole)} of
    every role of a Penstock user on the server, from its catalogs."""
    return {row[0]: row[1:] for row in workspace_server.query(
        "SELECT r.rolname, d.description, r.rolpassword, r.rolcanlogin, r.rolsuper, "
        "r.rolcreatedb, r.rolcreaterole FROM pg_authid r JOIN pg_shdescription d "
        "ON d.objoid = r.oid AND d.classoid = 'pg_authid'::regclass "
        "WHERE d.description LIKE 'penstock user %'")}


def databases(workspace_server):
    """{database: its mark} of every database of a Penstock user on the server."""
    return dict(workspace_server.query(
        "SELECT d.datname, s.description FROM pg_database d JOIN pg_shdescription s "
        "ON s.objoid = d.oid AND s.classoid = 'pg_database'::regclass "
        "WHERE s.description LIKE 'penstock user %'"))


def holds(workspace_server, user, *made, password):
    """The server holds the user's role `alice`, whose verifier is `password`'s, and exactly
    the databases of workspaces `made`."""
    [(role, (mark, verifier, login, *powers))] = roles(workspace_server).items()
    assert (role, mark, login, powers) == (user.handle, f'penstock user {user.id}', True,
                                           [False, False, False])
    assert workspace_servers.scram_verifier_matches(verifier, password)
    assert databases(workspace_server) == {
        ws.database_name: f'penstock user {user.id} workspace {ws.id}' for ws in made}


def test_the_worker_carries_out_every_job_on_the_server(user, workspace_server):
    analytics, staging = provision_and_rotate(user, 'analytics', 'staging')
    version, password = password_of(user)
    assert [(job.reason, job.status) for job in jobs()] == [
        ('workspace.create', 'pending'), ('workspace.create', 'pending'),
        ('user.password.rotate', 'pending')]

    assert run_jobs() == 1  # one user on one server: one converge for the three

    holds(workspace_server, user, analytics, staging, password=password)
    for ws in (analytics, staging):
        after = workspace(ws.id)
        assert after.password_version == version == 2
        assert after.password_state(version, user.handle) == 'applied'
        assert after.password_applied_at is not None
    assert {(job.status, job.locked_until, job.last_error) for job in jobs()} == {
        ('applied', None, None)}
    assert all(job.applied_at is not None for job in jobs())


def test_running_the_worker_again_does_nothing(user, workspace_server):
    [analytics] = provision_and_rotate(user, 'analytics')
    run_jobs()
    applied_at = workspace(analytics.id).password_applied_at
    held = roles(workspace_server), databases(workspace_server)
    target = Flaky()

    assert run_jobs(target) == 0
    assert target.calls == []
    # A job carried out twice changes nothing either, on the server or in the metadata.
    server = models.Config.workspace_servers[analytics.server]
    with database.db.connection_context(), server.holding(user.id) as connection:
        job = jobs()[0]
        ids, desired = job.desired()
        server.converge(connection, desired)
        PropagationJob.applied([job.id], desired)

    assert (roles(workspace_server), databases(workspace_server)) == held
    assert workspace(analytics.id).password_applied_at == applied_at
    assert workspace(analytics.id).password_version == 2


def test_a_failing_server_backs_off_and_retries_without_the_password_in_the_error(
        user, caplog, workspace_server):
    [analytics] = provision_and_rotate(user, 'analytics', rotations=0)
    _, password = password_of(user)
    caplog.set_level(logging.WARNING, logger='propagation')

    before = models.utcnow()
    assert run_jobs(Flaky(failures=1)) == 1  # then none is due until the backoff is over
    after = models.utcnow()

    [job] = jobs()
    assert job.status == 'pending' and job.attempts == 1 and job.locked_until is None
    assert before + datetime.timedelta(seconds=2) <= job.run_after <= (
        after + datetime.timedelta(seconds=2))
    assert job.last_error == 'ConnectionError'  # neither the statement nor the password
    assert password not in caplog.text and 'ALTER ROLE' not in caplog.text
    assert 'ConnectionError' in caplog.text
    assert workspace(analytics.id).password_version == 0
    assert roles(workspace_server) == {} and databases(workspace_server) == {}

    with database.db.connection_context():  # the backoff is over: it fails again, waits longer
        PropagationJob.update(run_after=models.utcnow()).execute()
    before = models.utcnow()
    assert run_jobs(Flaky(failures=1)) == 1
    after = models.utcnow()
    [job] = jobs()
    assert job.attempts == 2
    assert before + datetime.timedelta(seconds=4) <= job.run_after <= (
        after + datetime.timedelta(seconds=4))

    with database.db.connection_context():
        PropagationJob.update(run_after=models.utcnow()).execute()
    target = Flaky()
    assert run_jobs(target) == 1
    [job] = jobs()
    assert job.status == 'applied' and job.attempts == 3 and job.last_error is None
    assert target.calls == [('alice', 1, [analytics.id])]
    assert workspace(analytics.id).password_version == 1
    holds(workspace_server, user, analytics, password=password)


def test_a_server_that_does_not_answer_leaves_the_job_pending_with_only_the_error_type(
        user, caplog):
    """A real connection failure: nothing listens where the server should be."""
    [analytics] = provision_and_rotate(user, 'analytics', rotations=0)
    with socket_closed() as port:
        down = workspace_servers.Server(
            f'postgresql://penstock:admin-secret@127.0.0.1:{port}/postgres')
        with database.db.connection_context():
            Workspace.update(server=down.key).where(Workspace.id == analytics.id).execute()
            PropagationJob.update(server=down.key).execute()
        caplog.set_level(logging.WARNING, logger='propagation')

        assert run_jobs(workspace_servers.Servers([down])) == 1

    [job] = jobs()
    assert (job.status, job.attempts, job.last_error) == ('pending', 1, 'OperationalError')
    assert 'admin-secret' not in caplog.text and 'OperationalError' in caplog.text
    assert workspace(analytics.id).password_version == 0


@contextlib.contextmanager
def socket_closed():
    """A loopback port that nothing listens on (bound, not listening, for the duration)."""
    with socket.socket() as bound:
        bound.bind(('127.0.0.1', 0))
        yield bound.getsockname()[1]


def test_a_role_in_the_way_is_drift_named_in_words_and_retried(user, workspace_server):
    """A role named like the user that is not Penstock's is left alone: the job says so
    (names only) and waits; once it is gone, the job goes through."""
    [analytics] = provision_and_rotate(user, 'analytics', rotations=0)
    _, password = password_of(user)
    workspace_server.connection.execute('CREATE ROLE alice')
    try:
        assert run_jobs() == 1
        [job] = jobs()
        assert job.status == 'pending' and job.last_error == (
            "Drift: a role named alice exists on the server and is not this user's")
        assert password not in job.last_error
        assert databases(workspace_server) == {}
    finally:
        workspace_server.connection.execute('DROP ROLE alice')
    with database.db.connection_context():
        PropagationJob.update(run_after=models.utcnow()).execute()
    assert run_jobs() == 1
    assert jobs()[0].status == 'applied'
    holds(workspace_server, user, analytics, password=password)


def test_the_backoff_stops_growing_at_its_maximum(user):
    provision_and_rotate(user, 'analytics', rotations=0)
    with database.db.connection_context():
        PropagationJob.update(attempts=20).execute()
    before = models.utcnow()
    run_jobs(Flaky(failures=1))
    [job] = jobs()
    assert job.attempts == 21
    assert job.run_after - before >= datetime.timedelta(seconds=PROPAGATION_BACKOFF_MAX)
    assert job.run_after - models.utcnow() <= datetime.timedelta(
        seconds=PROPAGATION_BACKOFF_MAX)


def test_the_jobs_of_a_user_on_a_server_are_carried_out_together(user, workspace_server):
    [analytics] = provision_and_rotate(user, 'analytics', rotations=0)
    run_jobs()
    with database.db.connection_context():
        alice = models.User.get_by_id(user.id)
        DatabasePassword.rotate(alice)
        DatabasePassword.rotate(alice)
    assert [job.status for job in jobs(reason='user.password.rotate')] == ['pending', 'pending']
    version, password = password_of(user)
    target = Flaky()

    assert run_jobs(target) == 1  # the first job carries the newest password; the next is done

    assert target.calls == [('alice', 3, [analytics.id])]
    assert version == 3 and workspace(analytics.id).password_version == 3
    assert [job.status for job in jobs()] == ['applied', 'applied', 'applied']
    holds(workspace_server, user, analytics, password=password)


def test_a_job_queued_while_a_converge_runs_stays_pending_and_runs_again(user,
                                                                         workspace_server):
    """The converge in hand read the metadata before the rotation: the rotation's job is not
    among those it marks done, so the newer password follows."""
    [analytics] = provision_and_rotate(user, 'analytics')

    def rotate(desired):
        if desired.version == 2:
            DatabasePassword.rotate(models.User.get_by_id(user.id))

    target = Flaky(during=rotate)
    with database.db.connection_context():
        assert propagation.run_once(target, LEASE)
    [newer] = jobs(status='pending')
    assert newer.reason == 'user.password.rotate' and newer.attempts == 0
    assert workspace(analytics.id).password_version == 2
    version, password = password_of(user)
    assert version == 3
    [(_, (_, verifier, *_))] = roles(workspace_server).items()
    assert not workspace_servers.scram_verifier_matches(verifier, password)

    assert run_jobs(target) == 1
    assert target.calls == [('alice', 2, [analytics.id]), ('alice', 3, [analytics.id])]
    assert workspace(analytics.id).password_version == 3
    assert {job.status for job in jobs()} == {'applied'}
    holds(workspace_server, user, analytics, password=password)


def test_a_deleted_workspace_has_its_database_dropped_and_its_neighbour_kept(
        user, workspace_server):
    analytics, staging = provision_and_rotate(user, 'analytics', 'staging')
    run_jobs()
    with database.db.connection_context():
        workspace(staging.id).remove()
    [job] = jobs(status='pending')
    assert (job.user_id, job.server, job.reason) == (user.id, staging.server, 'workspace.delete')

    assert run_jobs() == 1

    holds(workspace_server, user, analytics, password=password_of(user)[1])
    assert workspace_server.query('SELECT 1 FROM pg_database WHERE datname = %s',
                                  (staging.database_name,)) == []


def test_a_workspace_deleted_while_its_job_is_in_hand_leaves_nothing_behind(user,
                                                                            workspace_server):
    """The converge in hand makes the database the metadata asked for when it read it; the
    deletion's job, queued meanwhile, drops it and the role with it."""
    [analytics] = provision_and_rotate(user, 'analytics')
    target = Flaky(during=lambda desired: desired.databases and workspace(analytics.id).remove())

    assert run_jobs(target) == 2

    assert [databases for _, _, databases in target.calls] == [[analytics.id], []]
    assert workspace(analytics.id) is None and {job.status for job in jobs()} == {'applied'}
    assert roles(workspace_server) == {} and databases(workspace_server) == {}


def test_a_leased_job_is_not_taken_by_a_second_worker_nor_are_its_siblings(user, bob):
    [analytics] = provision_and_rotate(user, 'analytics')
    [elsewhere] = provision_and_rotate(bob, 'elsewhere', rotations=0)
    with database.db.connection_context():
        held = PropagationJob.claim(LEASE)
    assert held is not None and held.attempts == 1 and held.user_id == user.id
    target = Flaky()

    assert run_jobs(target) == 1  # Bob's: Alice's other job waits for the lease

    assert target.calls == [('bob', 1, [elsewhere.id])]
    assert workspace(analytics.id).password_version == 0
    assert [job.status for job in jobs(user_id=user.id)] == ['pending', 'pending']


def test_an_expired_lease_lets_another_worker_take_the_job(user, workspace_server):
    [analytics] = provision_and_rotate(user, 'analytics')
    with database.db.connection_context():
        held = PropagationJob.claim(LEASE)
        PropagationJob.update(locked_until=models.utcnow() - datetime.timedelta(seconds=1)) \
            .where(PropagationJob.id == held.id).execute()

    assert run_jobs() == 1

    [again] = jobs(id=held.id)
    assert (again.status, again.attempts, again.locked_until) == ('applied', 2, None)
    holds(workspace_server, user, analytics, password=password_of(user)[1])


# The worker command, as its own process


@pytest.fixture
def workers(app):
    """Start `flask --app app worker` processes on this test's database (and the run's
    workspace server, from the environment); all are gone after."""
    started = []

    def start(lease=2):
        env = {**os.environ, 'DATABASE_URL': app.config['DATABASE_URL'],
               'DATABASE_PASSWORD_KEYS': TEST_PASSWORD_KEY, 'SECRET_KEY': 'worker test',
               'PROPAGATION_LEASE': str(lease), 'PROPAGATION_POLL': '0.1',
               'PYTHONUNBUFFERED': '1'}
        env.pop('PROPAGATION_WORKER_THREAD', None)
        process = subprocess.Popen([sys.executable, '-m', 'flask', '--app', 'app', 'worker'],
                                   cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)


def wait_until(condition, process, what, timeout=30):
    """Poll the database until `condition()` is true, while `process` is alive (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        with database.db.connection_context():
            value = condition()
        if value:
            return value
        if process.poll() is not None:
            pytest.fail(f'the worker exited ({process.returncode}) before {what}: '
                        + process.communicate()[0])
        if time.monotonic() > deadline:
            pytest.fail(f'timed out waiting until {what}')
        time.sleep(0.05)


def leased_job():
    return (PropagationJob.select()
            .where(PropagationJob.locked_until.is_null(False),
                   PropagationJob.status == 'pending').first())


def all_applied():
    return not PropagationJob.select().where(
        PropagationJob.status == 'pending').exists()


def stop(process):
    """SIGTERM, then the process's exit code and output."""
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=20)
    return process.returncode, output


@pytest.mark.slow  # worker processes killed with SIGKILL
def test_a_worker_killed_mid_way_leaves_its_job_to_the_next_one(
        user, workers, workspace_server):
    made = provision_and_rotate(user, 'analytics', 'staging', 'reports')
    version, password = password_of(user)

    with user_locked(workspace_server.url, user.id):
        first = workers()  # waits in the middle of its first job, for the lock, until killed
        held = wait_until(leased_job, first, 'a job is leased')
        wait_until(lambda: waiting_for_a_user_lock(workspace_server.url), first,
                   "the worker waits for the user's lock")
        first.kill()  # kill -9: no chance to clean up
        first.communicate(timeout=10)
    [job] = jobs(id=held.id)
    assert job.status == 'pending' and job.attempts == 1 and job.locked_until is not None
    assert {workspace(ws.id).password_version for ws in made} == {0}

    second = workers()
    wait_until(all_applied, second, 'every job is applied')

    for ws in made:
        assert workspace(ws.id).password_version == version
    assert jobs(id=held.id)[0].attempts == 2  # taken again once the dead worker's lease ran out
    holds(workspace_server, user, *made, password=password)
    returncode, output = stop(second)
    assert returncode == 0 and 'Propagation worker stopped.' in output
    assert password not in output


@pytest.mark.slow  # a worker process stopped with SIGTERM
def test_the_worker_command_finishes_the_job_in_hand_and_stops_on_sigterm(
        user, workers, workspace_server):
    analytics, staging = provision_and_rotate(user, 'analytics', 'staging')
    with user_locked(workspace_server.url, user.id):
        process = workers(lease=60)
        held = wait_until(leased_job, process, 'a job is leased')
        wait_until(lambda: waiting_for_a_user_lock(workspace_server.url), process,
                   "the worker waits for the user's lock")
        process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=20)  # the lock is free: the job in hand goes on

    assert process.returncode == 0
    assert output.splitlines()[0] == 'Propagation worker started.'
    assert output.splitlines()[-1] == 'Propagation worker stopped.'
    assert jobs(id=held.id)[0].status == 'applied'  # the job in hand was finished
    assert jobs(status='pending', locked_until=None) == jobs(status='pending')  # none held
    holds(workspace_server, user, analytics, staging, password=password_of(user)[1])
