"""Carries every change a workspace server must follow to it, off the request path.

Jobs live in the database (workspaces.PropagationJob), so they survive restarts; a worker
leases one at a time, brings that user's role, password and databases on that server to
what the metadata says (workspace_servers.Server.converge), and records it. A worker that
dies mid-way leaves its lease to expire and the job to be claimed again; a server that is
down leaves its jobs pending, retried with backoff, until it answers. Converging is
idempotent and reads the current state, so a job carried out late or twice is harmless."""
import atexit
import datetime
import logging
import signal
import threading

import psycopg

import database
import models
import workspace_servers
import workspaces

log = logging.getLogger(__name__)


def run_once(servers, lease):
    """Claim and carry out one due job on `servers` (a workspace_servers.Servers, or a
    stand-in with the same `[key]`, `holding` and `converge`); False when none was due."""
    job = workspaces.PropagationJob.claim(lease)
    if job is None:
        return False
    try:
        server = servers[job.server]
        with server.holding(job.user_id) as connection:
            carry_out(server, connection, job)
    except Exception as error:  # noqa: BLE001 - any failure is retried later
        # Only the error's type is kept and logged: a driver's message could quote a statement.
        log.warning('Propagation to workspace server %s for user %s failed (attempt %d): %s',
                    job.server, job.user_id, job.attempts, type(error).__name__)
        job.failed(error)
    return True


def carry_out(server, connection, job):
    """Bring `server` to what the metadata says of `job`'s user, through `connection`
    (holding()'s), end the role's connections if a job asks, and record it all applied."""
    ids, desired = job.desired()
    server.converge(connection, desired)
    if desired.role is not None and workspaces.PropagationJob.ends_connections(ids):
        server.end_connections(connection, desired.role)
    # Recorded under the lock: a check of the server (watch.py) that takes it next finds
    # the verifier just set on record, never a stale one.
    workspaces.PropagationJob.applied(ids, desired)


def run(servers, lease, poll, stop):
    """Work until `stop` (a threading.Event) is set: every due job, then wait `poll` s."""
    database.work_until(stop, poll, lambda: run_once(servers, lease), log,
                        'propagation worker')


def settings(config):
    """The lease and poll interval that `config` (the app's) asks for."""
    return (datetime.timedelta(seconds=config['PROPAGATION_LEASE']),
            config['PROPAGATION_POLL'])


def start_servers():
    """Start the configured workspace servers that Penstock runs itself (the embedded one),
    stop them when this process exits, and place workspaces made before workspaces were
    real. Whatever runs a worker calls this first."""
    servers = models.Config.workspace_servers
    servers.start()
    atexit.register(servers.stop)
    with database.db.connection_context():
        placed = workspaces.Workspace.place_unplaced()
    if placed:
        log.info('Placed %d workspace(s) on a workspace server.', placed)
    return servers


def start_thread(config):
    """Start the servers and run a worker in a daemon thread of this process (what `make
    run` does); returns the Event that stops the worker. A SIGTERM then exits through
    atexit, so the embedded server stops with the process (Ctrl-C does already)."""
    servers = start_servers()
    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL):
        signal.signal(signal.SIGTERM, _exit)
    stop = threading.Event()
    lease, poll = settings(config)
    threading.Thread(target=run, args=(servers, lease, poll, stop), name='propagation',
                     daemon=True).start()
    return stop


def _exit(signum, frame):
    raise SystemExit(128 + signum)


def check(servers):
    """Compare every workspace with its server (its database, the user's role and attributes,
    who may connect, the password's verifier, the limits) and everything the servers hold of
    Penstock users with the workspaces (a role left over, with what it still holds in other
    databases); queue a job for each user and server that differ (unless one
    is pending already). Yields lines to print, one per finding and one per server."""
    Workspace, Job = workspaces.Workspace, workspaces.PropagationJob
    for server in servers:
        count = Workspace.select().where(Workspace.server == server.key).count()
        try:
            with server.connect() as connection:
                users = server.marked_users(connection) | {
                    row.user_id for row in Workspace.select(Workspace.user).distinct()
                    .where(Workspace.server == server.key)}
                drifted = queued = 0
                for user_id in sorted(users):
                    job = Job(user_id=user_id, server=server.key)
                    _, desired = job.desired()
                    found = server.found(connection, user_id)
                    problems = (differences(desired, found, server.admin)
                                + server.limit_differences(desired, found))
                    if not problems:
                        continue
                    drifted += 1
                    pending = Job.select().where(Job.user_id == user_id, Job.server == server.key,
                                                 Job.status == 'pending').exists()
                    if not pending:
                        with database.write_transaction():
                            Job.queue(user_id, [server.key], 'workspaces.check')
                        queued += 1
                    action = 'a job was pending already' if pending else 'queued a job'
                    yield f'{server.key}: user {user_id}: {"; ".join(problems)} ({action})'
        except psycopg.OperationalError as error:
            yield (f'{server.key}: {count} workspace(s); the server did not answer '
                   f'({type(error).__name__}); its jobs stay pending')
            continue
        except psycopg.Error as error:  # e.g. an admin that may not read a catalog
            yield (f'{server.key}: {count} workspace(s); could not be checked '
                   f'({type(error).__name__}: {error.diag.message_primary})')
            continue
        yield (f'{server.key}: {count} workspace(s) of {len(users)} user(s); '
               f'{drifted} differ{"s" if drifted == 1 else ""} from the metadata, '
               f'{queued} job(s) queued')


def differences(desired, found, admin):
    """How what a server holds (`found`) differs from `desired`, in words; [] when it
    matches."""
    wanted = {} if desired.role is None else desired.databases
    problems = []
    if wanted and found.role is None:
        problems.append(f'role {desired.role} missing')
    elif not wanted and found.role is not None:
        problems.append(f'role {found.role} left over' + ''.join(
            f'; it owns objects or holds privileges in database {name}'
            for name in sorted(found.holdings - {''})))
    elif found.role is not None:
        if found.role != desired.role:
            problems.append(f'role is named {found.role}, not {desired.role}')
        if found.verifier_readable and not workspace_servers.scram_verifier_matches(
                found.verifier, desired.password):
            problems.append('password not current')
        wrong = [name for name, value in found.attributes.items()
                 if value != workspace_servers.ROLE_CLAUSES[name][0]]
        if wrong:
            problems.append('role attributes wrong: ' + ', '.join(sorted(wrong)))
    for workspace_id, name in sorted(wanted.items()):
        if name not in found.databases:
            problems.append(f'database {name} (workspace {workspace_id}) missing')
        else:
            others = found.connectable[name] - {found.role, admin}
            if others:
                problems.append(f'database {name} open to ' + ', '.join(
                    sorted(role or 'PUBLIC' for role in others)))
            if found.role is not None and found.role not in found.connectable[name]:
                problems.append(f'database {name} closed to role {found.role}')
    for name in sorted(set(found.databases) - set(wanted.values())):
        problems.append(f'database {name} left over')
    return problems
