"""Keeps every workspace server honest between changes: the periodic check a worker runs.

Every WORKSPACE_CHECK_INTERVAL seconds one worker (a lease per server, ServerCheck, so two
hosts never check one server at once) looks at each server:

- A role whose password is no longer the one Penstock set (any role may run `ALTER ROLE me
  PASSWORD …`, and a leaked password could be made to outlive its rotation that way) has
  Penstock's put back and its open connections ended, and its user gets a System email and
  the audit record `user.password.drift`. The check compares the verifier text in pg_authid
  with the one Penstock set (RoleVerifier), for every role at once in one catalog query: no
  PBKDF2, no login. Until the repair has run, the user's workspaces there show Pending.
- A backend of a Penstock role whose transaction has sat idle past
  WORKSPACE_IDLE_TRANSACTION_TIMEOUT is ended: a tenant may lift
  idle_in_transaction_session_timeout for themselves, and an idle transaction holds locks
  and keeps VACUUM from cleaning up after everyone else on the server."""
import datetime
import logging
import threading
from dataclasses import dataclass, field

import psycopg

import database
import models
import propagation
from mail import Email
from models import AuditRecord, User
from workspaces import PropagationJob, RoleVerifier, ServerCheck, Workspace

log = logging.getLogger(__name__)

DRIFT = 'user.password.drift'  # the audit action, System email and job reason of a repair


@dataclass
class Report:
    """What one check of one server found and did."""
    server: str
    repaired: list = field(default_factory=list)  # user ids whose password was put back
    queued: list = field(default_factory=list)  # user ids with no verifier on record yet
    idle_ended: list = field(default_factory=list)  # (role, pid) of idle transactions ended
    verifiers_readable: bool = True


def settings(config):
    """(lease, interval, idle transaction timeout) that `config` (the app's) asks for."""
    return (datetime.timedelta(seconds=config['PROPAGATION_LEASE']),
            datetime.timedelta(seconds=config['WORKSPACE_CHECK_INTERVAL']),
            config['WORKSPACE_IDLE_TRANSACTION_TIMEOUT'])


def check_servers(servers, lease, every, idle_timeout):
    """Check each of `servers` that is due (last checked `every` ago or more) and that no
    other worker holds; [Report] of those checked here. A server that does not answer is
    logged and checked again next time."""
    reports = []
    for server in servers:
        if not ServerCheck.claim(server.key, lease, every):
            continue
        try:
            reports.append(check_server(server, idle_timeout))
        except psycopg.Error as error:
            # Only the error's type: a driver's message could quote a statement.
            log.warning('The check of workspace server %s failed: %s', server.key,
                        type(error).__name__)
        finally:
            ServerCheck.done(server.key)
    return reports


def check_server(server, idle_timeout):
    """One check of `server` (see the module's docstring)."""
    report = Report(server.key)
    with server.connect() as connection:
        report.idle_ended = server.end_idle_transactions(connection, idle_timeout)
        differing = differ(server, connection)
    if differing is None:  # an admin that may not read pg_authid: every converge sets it
        report.verifiers_readable = False
        return report
    for user_id, on_record in differing:
        if _pending(user_id, server.key):
            continue  # the job sets Penstock's password anyway
        if not on_record:
            with database.write_transaction():
                PropagationJob.queue(user_id, [server.key], 'workspaces.check')
            report.queued.append(user_id)
        elif _repair(server, user_id):
            report.repaired.append(user_id)
    for role, pid in report.idle_ended:
        log.info('Ended backend %d of role %s on workspace server %s: its transaction sat '
                 'idle over %s s.', pid, role, server.key, idle_timeout)
    return report


def differ(server, connection):
    """[(user id, whether a verifier is on record)] of the Penstock roles on `server` whose
    verifier is not the one on record: one catalog query, one metadata query, and a
    comparison of texts. None when the admin may not read verifiers."""
    held = server.role_verifiers(connection)
    if held is None:
        return None
    on_record = RoleVerifier.on(server.key)
    return [(user_id, user_id in on_record) for user_id, (_role, verifier) in sorted(held.items())
            if on_record.get(user_id, (None, None))[1] != verifier]


def _pending(user_id, server):
    return PropagationJob.select().where(PropagationJob.user_id == user_id,
                                         PropagationJob.server == server,
                                         PropagationJob.status == 'pending').exists()


def _repair(server, user_id):
    """Under the user's lock on the server (no converge runs meanwhile), see again whether
    the role's verifier is the one on record; if not, record the drift (workspaces Pending,
    a job that ends the role's connections, audit, email) and carry the job out at once.
    Whether it was drift."""
    with server.holding(user_id) as connection:
        found = server.found(connection, user_id)
        recorded = RoleVerifier.get_or_none(RoleVerifier.user_id == user_id,
                                            RoleVerifier.server == server.key)
        if (found.role is None or recorded is None or found.verifier == recorded.verifier
                or _pending(user_id, server.key)):
            return False
        with database.write_transaction():
            user = User.get_or_none(User.id == user_id)
            Workspace.update(role=None).where(Workspace.user == user_id,
                                              Workspace.server == server.key).execute()
            PropagationJob.queue(user_id, [server.key], DRIFT, end_connections=True)
            if user is not None:
                count = Workspace.select().where(Workspace.user == user_id,
                                                 Workspace.server == server.key).count()
                AuditRecord.write(DRIFT, user, None, target=user,
                                  data={'role': found.role, 'workspaces': count})
                Email.tell(DRIFT, user, None, role=found.role, workspaces=count)
        log.warning('The password of role %s on workspace server %s was changed from inside; '
                    'putting it back.', found.role, server.key)
        job = PropagationJob.get(PropagationJob.user_id == user_id,
                                 PropagationJob.server == server.key,
                                 PropagationJob.status == 'pending')
        try:
            propagation.carry_out(server, connection, job)
        except Exception as error:  # noqa: BLE001 - the job stays pending for a worker
            log.warning('Putting back the password of role %s on workspace server %s failed '
                        '(%s); a worker retries it.', found.role, server.key,
                        type(error).__name__)
    return True


def run(servers, lease, every, idle_timeout, stop):
    """Check the servers until `stop` (a threading.Event) is set, looking for one that is due
    a few times per interval (a claim is one small write)."""
    def step():
        check_servers(servers, lease, every, idle_timeout)
        return False  # then wait: the next server falls due `every` after its last check

    database.work_until(stop, every.total_seconds() / 4, step, log, 'workspace check')


def start_thread(config, stop):
    """Run the check in a daemon thread of this process, on the configured servers (started
    by propagation.start_servers), until `stop` is set; returns the thread."""
    lease, every, idle_timeout = settings(config)
    thread = threading.Thread(target=run, name='workspace-check', daemon=True,
                              args=(models.Config.workspace_servers, lease, every,
                                    idle_timeout, stop))
    thread.start()
    return thread
