"""Carrying a rotated database password to every workspace: the durable jobs, the worker loop,
and `flask --app app worker` as a process that can be killed mid-way or stopped with SIGTERM."""
import datetime
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import database
import models
import propagation
from tests.conftest import TEST_PASSWORD_KEY
from tests.helpers import LEASE, provision_and_rotate
from workspaces import PROPAGATION_BACKOFF_MAX, DatabasePassword, PropagationJob, Workspace

ROOT = Path(__file__).resolve().parents[1]


class Recorder(propagation.Target):
    """A target that notes every call, and fails the first `failures` of them."""

    def __init__(self, failures=0, during=None):
        self.calls, self.failures, self.during = [], failures, during

    def apply(self, workspace, role, password):
        self.calls.append((workspace.handle, role, password))
        if self.during:
            self.during(workspace)
        if len(self.calls) <= self.failures:
            raise ConnectionError(f'could not run ALTER ROLE {role} PASSWORD {password!r}')


def run_all(target):
    """Run the worker until no job is due; returns how many jobs it took on."""
    taken = 0
    with database.db.connection_context():
        while propagation.run_once(target, LEASE):
            taken += 1
    return taken


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


def test_the_worker_applies_every_job_with_the_current_password(user):
    analytics, staging = provision_and_rotate(user, 'analytics', 'staging')
    version, password = password_of(user)
    target = Recorder()

    assert run_all(target) == 2

    assert sorted(target.calls) == [('analytics', 'alice', password),
                                    ('staging', 'alice', password)]
    for ws in (analytics, staging):
        after = workspace(ws.id)
        assert after.password_version == version == 2
        assert after.password_state(version) == 'applied'
        assert after.password_applied_at >= ws.password_applied_at
    assert {(job.status, job.locked_until, job.last_error) for job in jobs()} == {
        ('applied', None, None)}
    assert all(job.applied_at is not None for job in jobs())


def test_running_the_worker_again_does_nothing(user):
    [analytics] = provision_and_rotate(user, 'analytics')
    run_all(Recorder())
    applied_at = workspace(analytics.id).password_applied_at
    target = Recorder()

    assert run_all(target) == 0
    with database.db.connection_context():  # a job carried out twice changes nothing either
        jobs()[0].applied(2)

    assert target.calls == []
    assert workspace(analytics.id).password_applied_at == applied_at
    assert workspace(analytics.id).password_version == 2


def test_a_failing_target_backs_off_and_retries_without_the_password_in_the_error(
        user, caplog):
    [analytics] = provision_and_rotate(user, 'analytics')
    _, password = password_of(user)
    caplog.set_level(logging.WARNING, logger='propagation')

    before = models.utcnow()
    assert run_all(Recorder(failures=1)) == 1  # then none is due until the backoff is over
    after = models.utcnow()

    [job] = jobs()
    assert job.status == 'pending' and job.attempts == 1 and job.locked_until is None
    assert before + datetime.timedelta(seconds=2) <= job.run_after <= (
        after + datetime.timedelta(seconds=2))
    assert job.last_error == 'ConnectionError'
    assert password not in job.last_error and password not in caplog.text
    assert 'ConnectionError' in caplog.text
    assert workspace(analytics.id).password_version == 1

    with database.db.connection_context():  # the backoff is over: it fails again, waits longer
        PropagationJob.update(run_after=models.utcnow()).execute()
    before = models.utcnow()
    assert run_all(Recorder(failures=1)) == 1
    after = models.utcnow()
    [job] = jobs()
    assert job.attempts == 2
    assert before + datetime.timedelta(seconds=4) <= job.run_after <= (
        after + datetime.timedelta(seconds=4))

    with database.db.connection_context():
        PropagationJob.update(run_after=models.utcnow()).execute()
    target = Recorder()
    assert run_all(target) == 1
    [job] = jobs()
    assert job.status == 'applied' and job.attempts == 3 and job.last_error is None
    assert target.calls == [('analytics', 'alice', password)]
    assert workspace(analytics.id).password_version == 2


def test_the_backoff_stops_growing_at_its_maximum(user):
    provision_and_rotate(user, 'analytics')
    with database.db.connection_context():
        PropagationJob.update(attempts=20).execute()
    before = models.utcnow()
    run_all(Recorder(failures=1))
    [job] = jobs()
    assert job.attempts == 21
    assert job.run_after - before >= datetime.timedelta(seconds=PROPAGATION_BACKOFF_MAX)
    assert job.run_after - models.utcnow() <= datetime.timedelta(
        seconds=PROPAGATION_BACKOFF_MAX)


def test_a_newer_rotation_supersedes_the_older_jobs(user):
    [analytics] = provision_and_rotate(user, 'analytics', rotations=2)
    assert [job.password_version for job in jobs()] == [2, 3]
    version, password = password_of(user)
    target = Recorder()

    assert run_all(target) == 1  # the first job carries the newest password; the next is done

    assert target.calls == [('analytics', 'alice', password)]
    assert version == 3 and workspace(analytics.id).password_version == 3
    assert [job.status for job in jobs()] == ['applied', 'applied']


def test_the_jobs_of_a_deleted_workspace_vanish(user):
    analytics, staging = provision_and_rotate(user, 'analytics', 'staging')
    assert len(jobs(workspace=staging.id)) == 1
    with database.db.connection_context():
        workspace(staging.id).remove()
    assert jobs(workspace=staging.id) == []
    target = Recorder()

    assert run_all(target) == 1

    assert [call[0] for call in target.calls] == ['analytics']
    assert workspace(analytics.id).password_version == 2


def test_a_workspace_deleted_while_its_job_is_in_hand_is_left_alone(user):
    [analytics] = provision_and_rotate(user, 'analytics')
    target = Recorder(during=lambda ws: ws.remove())

    assert run_all(target) == 1

    assert workspace(analytics.id) is None and jobs() == []


def test_a_leased_job_is_not_taken_by_a_second_worker(user):
    [analytics] = provision_and_rotate(user, 'analytics')
    with database.db.connection_context():
        held = PropagationJob.claim(LEASE)
    assert held is not None and held.attempts == 1
    target = Recorder()

    assert run_all(target) == 0

    assert target.calls == []
    assert workspace(analytics.id).password_version == 1


# The worker command, as its own process


@pytest.fixture
def workers(app):
    """Start `flask --app app worker` processes on this test's database; all are gone after."""
    started = []

    def start(delay, lease=2):
        env = {**os.environ, 'DATABASE_URL': app.config['DATABASE_URL'],
               'DATABASE_PASSWORD_KEYS': TEST_PASSWORD_KEY, 'SECRET_KEY': 'worker test',
               'PROPAGATION_DELAY': str(delay), 'PROPAGATION_LEASE': str(lease),
               'PROPAGATION_POLL': '0.1', 'PYTHONUNBUFFERED': '1'}
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
def test_a_worker_killed_mid_way_leaves_its_job_to_the_next_one(user, workers):
    workspaces = provision_and_rotate(user, 'analytics', 'staging', 'reports')
    version, _ = password_of(user)

    first = workers(delay=60)  # stays in the middle of its first job until killed
    held = wait_until(leased_job, first, 'a job is leased')
    first.kill()  # kill -9: no chance to clean up
    first.communicate(timeout=10)
    [job] = jobs(id=held.id)
    assert job.status == 'pending' and job.attempts == 1 and job.locked_until is not None
    assert workspace(held.workspace_id).password_version == 1

    second = workers(delay=0)
    wait_until(all_applied, second, 'every job is applied')

    for ws in workspaces:
        assert workspace(ws.id).password_version == version
    assert jobs(id=held.id)[0].attempts == 2  # taken again once the dead worker's lease ran out
    returncode, output = stop(second)
    assert returncode == 0 and 'Propagation worker stopped.' in output


@pytest.mark.slow  # a worker process stopped with SIGTERM
def test_the_worker_command_finishes_the_job_in_hand_and_stops_on_sigterm(user, workers):
    provision_and_rotate(user, 'analytics', 'staging')
    process = workers(delay=2, lease=60)
    held = wait_until(leased_job, process, 'a job is leased')

    returncode, output = stop(process)

    assert returncode == 0
    assert output.splitlines()[0] == 'Propagation worker started.'
    assert output.splitlines()[-1] == 'Propagation worker stopped.'
    assert jobs(id=held.id)[0].status == 'applied'  # the job in hand was finished
    assert jobs(status='pending', locked_until=None) == jobs(status='pending')  # none held
