"""Benchmarks of issue 14: workspaces are real databases, on real PostgreSQL servers.

1. Rotate Password → Applied on 10 workspaces over 2 servers: DatabasePassword.rotate, then
   one worker (propagation.run_once, as `make run` has one) until every workspace shows
   Applied. Target: ≤ 2 s on this machine (absolute); printed as a ratio against one bare
   `ALTER ROLE … PASSWORD '<SCRAM verifier>'` round trip on an open connection × 10. The
   same again through a worker thread that polls as `make run`'s does (PROPAGATION_POLL),
   which is what a user waits for.
2. Provisioning: Workspace.provision, then the worker until its database exists (the user's
   role is made with it: each round starts from a user with nothing on the server), against
   a bare `CREATE DATABASE` on an open connection to the same server. Target ≤ 1.3×. Then
   where the provisioning's time goes, step by step.
3. Drift repair (issue 23): a connection to a workspace on each server sets its own role's
   password (`ALTER ROLE … PASSWORD`), at a random moment of the periodic check's cycle
   (watch.py in a thread, every WORKSPACE_CHECK_INTERVAL, 30 s); timed until both
   connections are ended and Penstock's password works again. Target ≤ 60 s end to end.
   Then the check of a server holding 1,000 Penstock roles (all current; its catalog query,
   the metadata's record and the comparison, on an open connection): target ≤ 50 ms.

Two embedded servers (embedded.py, durability off as in the tests) and a SQLite metadata
database, all in a temporary directory. Each figure is the median of its rounds; a round
measures Penstock and its baseline one after the other, and the ratio judged is the median
round's. Prints the figures; exits 0 either way. Quick mode (BENCH_QUICK=1, see _common.py):
two rounds (one drift repair, with a 1 s check interval), targets not judged.
"""
import contextlib
import datetime
import logging
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from unittest import mock

import psycopg
from cryptography.fernet import Fernet
from peewee import fn
from psycopg import sql

from _common import judged, quick_or

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import database  # noqa: E402  (Penstock itself, from the repository root)
import embedded  # noqa: E402
import models  # noqa: E402
import propagation  # noqa: E402
import watch  # noqa: E402
import workspace_servers  # noqa: E402
from app import create_app  # noqa: E402
from workspaces import DatabasePassword, PropagationJob, RoleVerifier, Workspace  # noqa: E402

WORKSPACES = 10
ROUNDS = quick_or(21, 2)
POLLED_ROUNDS = quick_or(10, 1)
ROTATE_TARGET = 2.0  # seconds, absolute
PROVISION_TARGET = 1.3
LEASE = datetime.timedelta(seconds=120)
BASELINE_ROLE = 'bench_baseline'
BASELINE_DATABASE = 'bench_baseline'
CHECK_INTERVAL = quick_or(30.0, 1.0)  # seconds: the default WORKSPACE_CHECK_INTERVAL
DRIFT_ROUNDS = quick_or(3, 1)
DRIFT_TARGET = 60.0  # seconds, end to end
MANY_ROLES = 1000
CHECK_ROUNDS = quick_or(21, 2)
CHECK_TARGET = 0.050  # seconds, one check of a server with MANY_ROLES roles
IDLE_TIMEOUT = 600


def ms(seconds):
    return f'{seconds * 1000:8.1f} ms'


def work(servers, done):
    """Carry out due jobs, one at a time, until `done()`; a round whose jobs fail stops the
    benchmark (its last_error says why)."""
    while not done():
        if not propagation.run_once(servers, LEASE):
            errors = {job.last_error for job in PropagationJob.select()
                      .where(PropagationJob.status == 'pending')}
            raise RuntimeError(f'propagation did not finish: {errors}')


def applied(user, version):
    """Whether every workspace of `user` shows password `version` as Applied."""
    return not Workspace.select().where(Workspace.user == user,
                                        Workspace.password_version < version).exists()


def rotate(user, servers):
    """Seconds from Rotate Password to every workspace Applied, one worker."""
    begin = time.perf_counter()
    version = DatabasePassword.rotate(user).version
    work(servers, lambda: applied(user, version))
    return time.perf_counter() - begin


def rotate_polled(user, poll):
    """Seconds from Rotate Password until the page would show every workspace Applied, the
    running worker thread (see main) carrying the jobs out. A user presses the button at any
    moment of the worker's `poll` s wait: a random one."""
    time.sleep(random.uniform(0, poll))
    begin = time.perf_counter()
    version = DatabasePassword.rotate(user).version
    while not applied(user, version):
        if time.perf_counter() - begin > 30:
            raise RuntimeError('the worker thread did not apply a rotation within 30 s')
        time.sleep(0.005)
    return time.perf_counter() - begin


def bare_alter_role(connection, verifiers):
    """Seconds for `ALTER ROLE … PASSWORD` with each ready-made verifier, in turn."""
    statements = [sql.SQL('ALTER ROLE {} PASSWORD {}').format(
        sql.Identifier(BASELINE_ROLE), sql.Literal(verifier)) for verifier in verifiers]
    begin = time.perf_counter()
    for statement in statements:
        connection.execute(statement)
    return time.perf_counter() - begin


def provision(user, servers, before_removal=lambda: None):
    """Seconds from Workspace.provision to its database made; then the workspace is deleted
    and its database and role dropped, untimed (`before_removal` is called first)."""
    begin = time.perf_counter()
    workspace = Workspace.provision(user, 'bench')
    work(servers, lambda: Workspace.get_by_id(workspace.id).password_version > 0)
    elapsed = time.perf_counter() - begin
    before_removal()
    workspace.remove()
    work(servers, lambda: not PropagationJob.select()
         .where(PropagationJob.status == 'pending').exists())
    return elapsed


def bare_create_database(connection):
    """Seconds for one `CREATE DATABASE` on `connection` (open, or a URL to open a new
    connection to first, untimed); dropped again, untimed."""
    with contextlib.ExitStack() as stack:
        if isinstance(connection, str):
            connection = stack.enter_context(psycopg.connect(connection, autocommit=True))
        begin = time.perf_counter()
        connection.execute(sql.SQL('CREATE DATABASE {}').format(
            sql.Identifier(BASELINE_DATABASE)))
        elapsed = time.perf_counter() - begin
        connection.execute(sql.SQL('DROP DATABASE {}').format(
            sql.Identifier(BASELINE_DATABASE)))
    return elapsed


class Steps:
    """Where a provisioning's time goes: wall time per step, summed while `recording` (the
    admin connections, the statements on the server by kind, the metadata's parts)."""

    def __init__(self):
        self.seconds, self.counts, self.recording = {}, {}, True

    @contextlib.contextmanager
    def timing(self, step):
        begin = time.perf_counter()
        try:
            yield
        finally:
            if self.recording:
                self.seconds[step] = self.seconds.get(step, 0.0) + time.perf_counter() - begin
                self.counts[step] = self.counts.get(step, 0) + 1

    def timed(self, step, function):
        def wrapper(*arguments, **keywords):
            with self.timing(step):
                return function(*arguments, **keywords)
        return wrapper

    def instrumented(self):
        """Wrap (for the block; bench-only) the metadata's steps, and Server.connect with a
        connection that times each statement by its first words."""
        steps = self

        class Traced(psycopg.Connection):
            def execute(self, query, params=None, **options):
                text = query.as_string(self) if isinstance(query, sql.Composable) else query
                with steps.timing('server: ' + statement_kind(text)):
                    return super().execute(query, params, **options)

        def connect(server, database=None):
            options = {'dbname': database} if database else {}
            step = 'connect (admin)' if database is None else 'connect into the new database'
            with steps.timing('server: ' + step):
                return Traced.connect(server.url, autocommit=True,
                                      connect_timeout=workspace_servers.CONNECT_TIMEOUT,
                                      application_name='penstock', **options)

        stack = contextlib.ExitStack()
        for owner, name, step, wrap in (
                (Workspace, 'provision', 'Workspace.provision (row, job, audit)', classmethod),
                (PropagationJob, 'claim', 'claim the job', classmethod),
                (PropagationJob, 'desired', 'read what is desired', None),
                (PropagationJob, 'applied', 'record it applied', staticmethod)):
            function = owner.__dict__[name]
            function = function.__func__ if wrap else function
            wrapper = self.timed('metadata: ' + step, function)
            stack.enter_context(mock.patch.object(owner, name,
                                                  wrap(wrapper) if wrap else wrapper))
        stack.enter_context(mock.patch.object(workspace_servers.Server, 'connect', connect))
        return stack


def statement_kind(text):
    """A statement's label in the breakdown: its words up to the first quoted name or
    literal; a SELECT by what it reads."""
    if text.startswith('SELECT'):
        return ('SELECT pg_advisory_lock' if 'pg_advisory_lock' in text else
                'SELECT the role (found)' if 'FROM pg_authid' in text else
                'SELECT the databases (found)' if 'FROM pg_database d' in text else
                'SELECT whether the role name is free' if 'FROM pg_roles' in text else
                'SELECT (other)')
    words = []
    for word in text.split():
        if word[0] in '"\'':
            break
        words.append(word)
    return ' '.join(words)


def breakdown(user, servers, admin, rounds):
    """Provision `rounds` times with every step timed, each round with a bare CREATE DATABASE
    on the open connection and one on a new connection; print each step's mean."""
    steps = Steps()
    total, warm, new = 0.0, [], []
    with steps.instrumented():
        for _ in range(rounds):
            server = servers[Workspace.placement()]
            steps.recording = True
            total += provision(user, servers, before_removal=lambda: setattr(
                steps, 'recording', False))
            warm.append(bare_create_database(admin[server.url]))
            new.append(bare_create_database(server.url))
    known = sum(steps.seconds.values())
    print(f'  Where provisioning\'s time goes: mean of {rounds} instrumented rounds, '
          f'{ms(total / rounds).strip()} in all:')
    for step, seconds in sorted(steps.seconds.items(), key=lambda item: -item[1]):
        print(f'    {step:52} {ms(seconds / rounds)}  ×{steps.counts[step] // rounds}')
    print(f'    {"the rest (the worker loop and the lookups between)":52} '
          f'{ms((total - known) / rounds)}')
    print('  In the same rounds, a bare CREATE DATABASE:')
    print(f'    {"on the open connection (the baseline)":52} {ms(statistics.fmean(warm))}')
    print(f'    {"on a new connection, as the job runs it":52} {ms(statistics.fmean(new))}')


def drift_repaired(owner, every):
    """Seconds from a password set from inside a workspace on each server until both
    connections are ended and Penstock's password works again, the check thread (see main)
    running every `every` s; the attacker acts at a random moment of its cycle."""
    time.sleep(random.uniform(0, every))
    password = DatabasePassword.for_user(owner).password
    strings = {}
    for workspace in Workspace.select().where(Workspace.user == owner):
        strings.setdefault(workspace.server, workspace.connection_string(password, 'owner'))
    attackers = [psycopg.connect(string, autocommit=True) for string in strings.values()]
    begin = time.perf_counter()
    for attacker in attackers:
        attacker.execute("ALTER ROLE CURRENT_USER PASSWORD 'mallory-was-here'")
    open_ones = list(attackers)
    while open_ones:
        if time.perf_counter() - begin > 3 * every + 30:
            raise RuntimeError('no drift repair within three check intervals')
        time.sleep(0.01)
        open_ones = [attacker for attacker in open_ones if still_open(attacker)]
    elapsed = time.perf_counter() - begin
    for attacker in attackers:
        attacker.close()
    for string in strings.values():
        psycopg.connect(string).close()  # Penstock's password works again
    return elapsed


def still_open(connection):
    try:
        connection.execute('SELECT 1')
    except psycopg.OperationalError:
        return False
    return True


def many_roles(connection, key, count):
    """`count` Penstock roles on the server of `connection`, each with the verifier on
    record in the metadata (as if made by converges), so a check finds nothing to do."""
    verifier = connection.pgconn.encrypt_password(b'bench', b'bench', b'scram-sha-256').decode()
    with connection.transaction():
        for number in range(count):
            role = sql.Identifier(f'bench{number:04d}')
            connection.execute(sql.SQL('CREATE ROLE {} LOGIN PASSWORD {}').format(
                role, sql.Literal(verifier)))
            connection.execute(sql.SQL('COMMENT ON ROLE {} IS {}').format(
                role, sql.Literal(workspace_servers.role_mark(f'u_bench{number:04d}'))))
    now = models.utcnow()
    with database.write_transaction():
        RoleVerifier.insert_many([dict(user_id=f'u_bench{number:04d}', server=key,
                                       role=f'bench{number:04d}', version=1,
                                       verifier=verifier, set_at=now)
                                  for number in range(count)]).execute()


def timed_checks(server, rounds):
    """Seconds of each of `rounds` checks of `server`'s verifiers on an open connection (the
    catalog query, the metadata's record, the comparison: watch.differ), and of each whole
    pass (watch.check_server: a new admin connection and the idle-transaction sweep too)."""
    checks, passes = [], []
    with server.connect() as connection:
        held = len(server.role_verifiers(connection))
        for _ in range(rounds):
            begin = time.perf_counter()
            differing = watch.differ(server, connection)
            checks.append(time.perf_counter() - begin)
            begin = time.perf_counter()
            watch.check_server(server, IDLE_TIMEOUT)
            passes.append(time.perf_counter() - begin)
            if differing:
                raise RuntimeError(f'the check found roles to repair: {differing}')
    return checks, passes, held


def start_servers(folder):
    servers = [embedded.EmbeddedPostgres(Path(folder) / f'server-{number}', durable=False)
               for number in (1, 2)]
    for server in servers:
        server.start()
    return servers


def main():
    with tempfile.TemporaryDirectory(prefix='penstock-bench-') as folder, \
            contextlib.ExitStack() as stack:
        started = time.perf_counter()
        postgres = start_servers(folder)
        for server in postgres:
            stack.callback(server.stop)
        app = create_app({'SECRET_KEY': 'bench secret key', 'GRAVATAR_ENABLED': False,
                          'DATABASE_URL': f'sqlite:///{folder}/penstock.db',
                          'DATABASE_PASSWORD_KEYS': Fernet.generate_key().decode(),
                          'WORKSPACE_DATABASE_URL': ','.join(s.url for s in postgres),
                          'PROPAGATION_WORKER_THREAD': False})
        servers = models.Config.workspace_servers
        database.migrate(database.db.obj)
        admin = {server.url: stack.enter_context(psycopg.connect(server.url, autocommit=True))
                 for server in postgres}
        first = admin[postgres[0].url]
        first.execute(sql.SQL('CREATE ROLE {} LOGIN').format(sql.Identifier(BASELINE_ROLE)))
        verifiers = [first.pgconn.encrypt_password(f'bench {n}'.encode(), BASELINE_ROLE.encode(),
                                                   b'scram-sha-256').decode()
                     for n in range(WORKSPACES)]
        with database.db.connection_context():
            owner = models.User.sign_up('owner@example.com', 'owner', 'bench password')
            newcomer = models.User.sign_up('newcomer@example.com', 'newcomer', 'bench password')
            for number in range(WORKSPACES):
                Workspace.provision(owner, f'w{number}')
            work(servers, lambda: applied(owner, 1))
            placed = dict(Workspace.select(Workspace.server, fn.COUNT(Workspace.id))
                          .group_by(Workspace.server).tuples())
            setup = time.perf_counter() - started
            # A warm-up of each: the first job on a server prepares it, once per process.
            rotate(owner, servers)
            bare_alter_role(first, verifiers)
            provision(newcomer, servers)
            by_key = {server.key: admin[server.url] for server in servers}
            rotations, alters, provisions, creates = [], [], [], []
            for number in range(ROUNDS):
                key = Workspace.placement()  # where the workspace goes, and so the baseline
                pairs = (((rotations, lambda: rotate(owner, servers)),
                          (alters, lambda: bare_alter_role(first, verifiers))),
                         ((provisions, lambda: provision(newcomer, servers)),
                          (creates, lambda: bare_create_database(by_key[key]))))
                # Each goes first in every other round: neither always meets what the other
                # left the server (the dirty pages of a dropped database, say).
                for pair in pairs:
                    for values, measure in (pair if number % 2 else pair[::-1]):
                        values.append(measure())
        stop = threading.Event()
        worker = threading.Thread(target=propagation.run, args=(
            servers, LEASE, app.config['PROPAGATION_POLL'], stop), daemon=True)
        worker.start()
        try:
            with database.db.connection_context():
                polled = [rotate_polled(owner, app.config['PROPAGATION_POLL'])
                          for _ in range(POLLED_ROUNDS)]
        finally:
            stop.set()
            worker.join()
        # Each repair logs a warning (an operator should hear of it); here it is expected.
        logging.getLogger('watch').setLevel(logging.ERROR)
        every, checking = datetime.timedelta(seconds=CHECK_INTERVAL), threading.Event()
        checker = threading.Thread(target=watch.run, args=(
            servers, LEASE, every, IDLE_TIMEOUT, checking), daemon=True)
        checker.start()
        try:
            with database.db.connection_context():
                repairs = [drift_repaired(owner, CHECK_INTERVAL) for _ in range(DRIFT_ROUNDS)]
        finally:
            checking.set()
            checker.join()
        with database.db.connection_context():
            second = list(servers)[1]
            many_roles(admin[second.url], second.key, MANY_ROLES)
            checks, passes, held = timed_checks(second, CHECK_ROUNDS)
            print_figures(setup, placed, rotations, alters, provisions, creates, polled,
                          app.config['PROPAGATION_POLL'])
            print_drift(repairs, checks, passes, held)
            breakdown(newcomer, servers, admin, quick_or(11, 1))
        database.db.close()


def print_figures(setup, placed, rotations, alters, provisions, creates, polled, poll):
    print('Workspace benchmarks (bench/workspaces.py): two embedded PostgreSQL servers '
          '(durability off), SQLite metadata, one worker')
    placements = ', '.join(f'{count} on {key}' for key, count in sorted(placed.items()))
    print(f'{os.cpu_count()} CPUs, load average ' + '{:.2f} {:.2f} {:.2f}'.format(
        *os.getloadavg()) + f'; servers started and {WORKSPACES} workspaces made in '
        f'{setup:.1f} s, placed {placements}')
    print(f'Figures: the median of {ROUNDS} rounds after a warm-up (and the spread); a round '
          'measures Penstock and its baseline one after the other.')
    print()
    rotation = statistics.median(rotations)
    print(f'1. Rotate Password → Applied, {WORKSPACES} workspaces on 2 servers:')
    figure('rotate, then one worker until all Applied', rotations)
    figure(f'bare ALTER ROLE … PASSWORD × {WORKSPACES}, open connection', alters)
    print(f'  {"ratio":52} {median_ratio(rotations, alters):6.2f}×    '
          f'(target ≤ {ROTATE_TARGET:g} s: {judged(rotation <= ROTATE_TARGET)})')
    figure(f'the same, worker thread polling every {poll:g} s', polled,
           f'{len(polled)} round{"s" if len(polled) > 1 else ""}, pressed at a random moment of '
           'its wait')
    print(f'  {"slowest of those":52} {ms(max(polled))}  '
          f'(target ≤ {ROTATE_TARGET:g} s: {judged(max(polled) <= ROTATE_TARGET)})')
    print()
    ratio = median_ratio(provisions, creates)
    print('2. Provisioning a workspace (its database, and the user\'s role):')
    figure('provision, then one worker until the database exists', provisions)
    figure('bare CREATE DATABASE, open connection, same server', creates)
    print(f'  {"ratio":52} {ratio:6.2f}×    '
          f'(target ≤ {PROVISION_TARGET}×: {judged(ratio <= PROVISION_TARGET)})')
    # CREATE DATABASE copies a template, so its time follows the disk's load; what
    # provisioning adds to it varies far less, and says what a ratio alone hides.
    figure('what provisioning adds (each round\'s difference)',
           [mine - theirs for mine, theirs in zip(provisions, creates)])


def print_drift(repairs, checks, passes, held):
    print()
    print(f'3. Drift repair: a password set from inside a workspace on each of 2 servers, the '
          f'check running every {CHECK_INTERVAL:g} s:')
    figure('set from inside → connections ended, password back', repairs,
           f'{len(repairs)} round{"s" if len(repairs) > 1 else ""}, at a random moment of the '
           'cycle')
    print(f'  {"slowest of those":52} {ms(max(repairs))}  '
          f'(target ≤ {DRIFT_TARGET:g} s: {judged(max(repairs) <= DRIFT_TARGET)})')
    check = statistics.median(checks)
    figure(f'check of a server with {held} Penstock roles', checks,
           'catalog query, record, comparison')
    print(f'  {"":52} {"":11}  (target ≤ {CHECK_TARGET * 1000:g} ms: '
          f'{judged(check <= CHECK_TARGET)})')
    figure('the whole pass, with a new admin connection', passes, 'and the idle sweep')


def figure(label, values, note=''):
    print(f'  {label:52} {ms(statistics.median(values))}  (spread '
          f'{ms(min(values)).strip()}–{ms(max(values)).strip()}{"; " + note if note else ""})')


def median_ratio(ours, baselines):
    """The median round's ratio: each round measures both at one moment's load."""
    return statistics.median(mine / theirs for mine, theirs in zip(ours, baselines))


if __name__ == '__main__':
    sys.exit(main())
