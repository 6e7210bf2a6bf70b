"""Carries a rotated database password to every workspace, off the request path.

Jobs live in the database (workspaces.PropagationJob), so they survive restarts; a worker
leases one at a time, applies the current password through a target, and records it. A
worker that dies mid-way leaves its lease to expire and the job to be claimed again.
Applying is idempotent: the target is always given the current password."""
import datetime
import logging
import threading
import time

import database
import workspaces

log = logging.getLogger(__name__)


class Target:
    """Where passwords are applied. A real backend would run, on the workspace's server,
    ALTER ROLE "<user handle>" PASSWORD '<password>' (existing connections stay open)."""

    def apply(self, workspace, role, password):
        raise NotImplementedError


class RecordingTarget(Target):
    """The default target: takes `delay` seconds, as a real server would, and succeeds; the
    worker then records the applied version on the workspace."""

    def __init__(self, delay):
        self.delay = delay

    def apply(self, workspace, role, password):
        time.sleep(self.delay)


def run_once(target, lease):
    """Claim and carry out one due job; False when none was due."""
    job = workspaces.PropagationJob.claim(lease)
    if job is None:
        return False
    try:
        workspace = workspaces.Workspace.get_or_none(workspaces.Workspace.id == job.workspace_id)
        if workspace is None:  # deleted meanwhile; its jobs went with it
            return True
        password = workspaces.DatabasePassword.for_user(job.user_id)
        target.apply(workspace, workspace.user.handle, password.password)
        job.applied(password.version)
    except Exception as error:  # noqa: BLE001 - any failure is retried later
        # Only the error's type is kept and logged: a driver's message could quote the password.
        log.warning('Password propagation to workspace %s failed (attempt %d): %s',
                    job.workspace_id, job.attempts, type(error).__name__)
        job.failed(type(error).__name__)
    return True


def run(target, lease, poll, stop):
    """Work until `stop` (a threading.Event) is set: every due job, then wait `poll` s."""
    while not stop.is_set():
        try:
            with database.db.connection_context():
                while not stop.is_set() and run_once(target, lease):
                    pass
        except Exception:  # noqa: BLE001 - the database may be briefly away; keep going
            log.exception('The propagation worker hit an error; it goes on.')
        stop.wait(poll)


def settings(config):
    """The target, lease and poll interval that `config` (the app's) asks for."""
    return (RecordingTarget(config['PROPAGATION_DELAY']),
            datetime.timedelta(seconds=config['PROPAGATION_LEASE']),
            config['PROPAGATION_POLL'])


def start_thread(config):
    """Run a worker in a daemon thread of this process (what `make run` does); returns the
    Event that stops it."""
    stop = threading.Event()
    target, lease, poll = settings(config)
    threading.Thread(target=run, args=(target, lease, poll, stop), name='propagation',
                     daemon=True).start()
    return stop
