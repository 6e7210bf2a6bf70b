"""Tenants who share a workspace server, acting as users and attackers would (issue 23,
findings 2 and 3): one role flooding connections leaves room for the others and for
Penstock's admin; a tenant cannot lift its limits; `workspaces check` finds limits gone wrong
and has them restated; and whatever tenants granted each other, deleting an account or a
workspace leaves no role, grant or owned object behind, and frees the handle for a working
database. Every check is a real connection to, or a query of, a real server."""
import contextlib

import psycopg
import pytest
from psycopg import sql

import database
import embedded
import models
from app import create_app
from tests.conftest import QUICK_PASSWORD_HASH, TEST_PASSWORD_KEY
from tests.helpers import html, log_in, make_user, run_jobs
from tests.test_real_workspaces import (change_handle, check, connect, password_of,
                                        pending_jobs, provision, refusal, roles, shown, summary,
                                        who)
from workspace_servers import Desired, Limits, Server, Servers
from workspaces import PropagationJob, Workspace

TOO_MANY_FOR_ROLE = 'too many connections for role "{}"'
TOO_MANY_FOR_DATABASE = 'too many connections for database "{}"'
RESERVED = 'remaining connection slots are reserved'
DENIED = psycopg.errors.InsufficientPrivilege


@contextlib.contextmanager
def opened(conninfo, count, **options):
    """`count` connections, open until the block ends."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(connect(conninfo, **options)) for _ in range(count)]


def limited(workspace_server, connections=20, temp_file_kb=1024 ** 2):
    """The run's server as a Servers of its own, with these limits."""
    return Servers([Server(workspace_server.url,
                           limits=Limits(connections=connections, temp_file_kb=temp_file_kb))])


def role_limits(workspace_server, role):
    """(connection limit, temp_file_limit as set on the role or None) on the server."""
    return workspace_server.query(
        "SELECT r.rolconnlimit, (SELECT c FROM pg_db_role_setting s, unnest(s.setconfig) c "
        "WHERE s.setrole = r.oid AND s.setdatabase = 0 AND c LIKE 'temp_file_limit=%%') "
        "FROM pg_roles r WHERE r.rolname = %s", (role,))[0]


def database_limit(workspace_server, name):
    return workspace_server.query('SELECT datconnlimit FROM pg_database WHERE datname = %s',
                                  (name,))[0][0]


# Connection limits

def test_one_role_flooding_connections_is_refused_past_its_limit_and_others_still_connect(
        app, user, other_user, workspace_server):
    [analytics] = provision(user, 'analytics')
    [reports] = provision(other_user, 'reports')
    run_jobs()
    assert role_limits(workspace_server, 'alice') == (20, 'temp_file_limit=1048576')
    assert database_limit(workspace_server, analytics.database_name) == 20
    assert workspace_server.query('SHOW max_connections') == [('210',)], '10 tenants at 20, +10'
    assert workspace_server.query('SHOW superuser_reserved_connections') == [('10',)]
    with opened(shown(analytics), 20):
        assert TOO_MANY_FOR_ROLE.format('alice') in refusal(shown(analytics))
        assert who(shown(reports)) == ('bob', reports.database_name)
        with connect(workspace_server.url) as admin:
            assert admin.execute('SELECT current_user').fetchone() == ('penstock',)
    assert who(shown(analytics)) == ('alice', analytics.database_name), 'free again'


def test_a_database_takes_no_more_than_its_limit_from_every_role_together(
        app, user, other_user, workspace_server):
    """An organization's database will be shared by its members: its own limit holds for all
    of them together, whatever each role has left."""
    [analytics] = provision(user, 'analytics')
    provision(other_user, 'reports')
    run_jobs(limited(workspace_server, 3))
    assert database_limit(workspace_server, analytics.database_name) == 3
    workspace_server.connection.execute(sql.SQL('GRANT CONNECT ON DATABASE {} TO bob').format(
        sql.Identifier(analytics.database_name)))
    as_bob = {'user': 'bob', 'password': password_of(other_user)}
    with opened(shown(analytics), 2), opened(shown(analytics), 1, **as_bob):
        assert TOO_MANY_FOR_DATABASE.format(analytics.database_name) in refusal(
            shown(analytics), **as_bob)


@pytest.mark.slow  # a server of its own, small enough to fill
def test_the_admin_gets_through_when_tenants_hold_every_other_slot(tmp_path):
    """Ten tenants at a limit of 1 fill every slot of a server sized for them; the eleventh
    is refused, while Penstock's admin still connects, several times, and rotates a
    password."""
    with embedded.EmbeddedPostgres(tmp_path / 'small', durable=False,
                                   connection_limit=1) as small:
        server = Server(small.url, limits=Limits(connections=1))
        tenants = [Desired(f'u{n}', f'tenant{n}', f'password-{n}', 1, {'w': f'db{n}'})
                   for n in range(embedded.TENANTS_AT_LIMIT + 1)]
        for tenant in tenants:
            with server.holding(tenant.user_id) as connection:
                server.converge(connection, tenant)

        def string(tenant):
            return (f'postgresql://{tenant.role}:{tenant.password}@127.0.0.1:{small.port}/'
                    f'{tenant.databases["w"]}')

        with contextlib.ExitStack() as stack:
            for tenant in tenants[:-1]:
                stack.enter_context(connect(string(tenant)))
            assert TOO_MANY_FOR_ROLE.format('tenant0') in refusal(string(tenants[0]))
            assert RESERVED in refusal(string(tenants[-1]))
            with opened(small.url, embedded.ADMIN_RESERVED - 2):
                rotated = Desired('u10', 'tenant10', 'rotated', 2, {'w': 'db10'})
                with server.holding('u10') as connection:
                    server.converge(connection, rotated)
        assert who(string(rotated)) == ('tenant10', 'db10')


# Temporary files

def test_a_tenants_temporary_files_stop_at_the_limit_and_it_cannot_lift_it(
        app, user, workspace_server):
    [analytics] = provision(user, 'analytics')
    run_jobs(limited(workspace_server, temp_file_kb=1024))
    with connect(shown(analytics)) as tenant:
        assert tenant.execute('SHOW temp_file_limit').fetchone() == ('1MB',)
        tenant.execute("SET work_mem = '64kB'")
        with pytest.raises(psycopg.errors.ConfigurationLimitExceeded):
            tenant.execute('SELECT count(*) FROM (SELECT g FROM generate_series(1, 500000) g '
                           'ORDER BY g DESC) sorted')
        name = sql.Identifier(analytics.database_name)
        for statement in [
                sql.SQL('SET temp_file_limit = -1'),
                sql.SQL('ALTER ROLE alice SET temp_file_limit = -1'),
                sql.SQL('ALTER ROLE alice RESET temp_file_limit'),
                sql.SQL('ALTER ROLE alice IN DATABASE {} SET temp_file_limit = -1').format(name),
                sql.SQL('ALTER DATABASE {} SET temp_file_limit = -1').format(name),
                sql.SQL('ALTER ROLE alice CONNECTION LIMIT -1'),
                sql.SQL('ALTER DATABASE {} CONNECTION LIMIT -1').format(name)]:
            with pytest.raises(DENIED):
                tenant.execute(statement)
    assert role_limits(workspace_server, 'alice') == (20, 'temp_file_limit=1024')
    assert database_limit(workspace_server, analytics.database_name) == 20
    with connect(shown(analytics)) as again:
        assert again.execute('SHOW temp_file_limit').fetchone() == ('1MB',)


# workspaces check

@pytest.mark.parametrize('drift, problem', [
    ('ALTER ROLE alice CONNECTION LIMIT -1', 'role alice has connection limit -1, not 20'),
    ('ALTER ROLE alice RESET temp_file_limit',
     'role alice has temp_file_limit unset, not 1048576kB'),
    ("ALTER ROLE alice SET temp_file_limit = '2GB'",
     'role alice has temp_file_limit 2GB, not 1048576kB'),
    ('ALTER DATABASE {database} CONNECTION LIMIT -1',
     'database {database} has connection limit -1, not 20'),
], ids=['role-connections', 'temp-files-unset', 'temp-files-raised', 'database-connections'])
def test_check_names_a_limit_gone_wrong_and_the_worker_restates_it(
        app, user, workspace_server, drift, problem):
    [analytics] = provision(user, 'analytics')
    run_jobs()
    workspace_server.connection.execute(drift.format(database=analytics.database_name))
    assert check(app) == (f'127.0.0.1:{workspace_server.port}: user {user.id}: '
                          f'{problem.format(database=analytics.database_name)} (queued a job)\n'
                          + summary(workspace_server, 1, 1, 1, 1))
    assert run_jobs() == 1
    assert check(app) == summary(workspace_server, 1, 1, 0, 0)
    assert role_limits(workspace_server, 'alice') == (20, 'temp_file_limit=1048576')
    assert database_limit(workspace_server, analytics.database_name) == 20


def test_new_limits_reach_existing_roles_and_databases_through_check(
        app, user, workspace_server, monkeypatch):
    [analytics] = provision(user, 'analytics')
    run_jobs()
    monkeypatch.setattr(models.Config, 'workspace_servers',
                        limited(workspace_server, 5, temp_file_kb=2048))
    output = check(app)
    for problem in ('role alice has connection limit 20, not 5',
                    'role alice has temp_file_limit 1048576, not 2048kB',
                    f'database {analytics.database_name} has connection limit 20, not 5'):
        assert problem in output
    assert run_jobs() == 1
    assert role_limits(workspace_server, 'alice') == (5, 'temp_file_limit=2048')
    assert database_limit(workspace_server, analytics.database_name) == 5
    assert check(app) == summary(workspace_server, 1, 1, 0, 0)


# Deletion, whatever tenants granted each other

def entangle(workspace_server, analytics, victim, bob):
    """Alice grants victim what a tenant can in her database, and (as an organization's
    database will be shared) victim may connect there: victim makes a table, a view and a
    SECURITY DEFINER function of its own in it, and passes its grant on to bob."""
    with connect(shown(analytics)) as alice:
        for statement in [
                'CREATE TABLE t (x int)', 'INSERT INTO t VALUES (1), (2)',
                'GRANT SELECT ON t TO victim WITH GRANT OPTION',
                'GRANT USAGE, CREATE ON SCHEMA public TO victim',
                'ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO victim',
                'ALTER TABLE t ENABLE ROW LEVEL SECURITY',
                'CREATE POLICY seen ON t TO victim USING (true)']:
            alice.execute(statement)
    workspace_server.connection.execute(sql.SQL('GRANT CONNECT ON DATABASE {} TO victim')
                                        .format(sql.Identifier(analytics.database_name)))
    with connect(shown(analytics), user='victim', password=password_of(victim)) as inside:
        for statement in [
                'CREATE TABLE v AS SELECT 3 AS x', 'CREATE VIEW vv AS SELECT x FROM t',
                'CREATE FUNCTION whose() RETURNS name SECURITY DEFINER LANGUAGE sql '
                'AS $$SELECT current_user$$',
                'GRANT SELECT ON t TO bob']:
            inside.execute(statement)


def owners(analytics):
    """{object: owner} of what is in alice's database, as alice sees it."""
    with connect(shown(analytics)) as alice:
        return dict(alice.execute(
            "SELECT relname, relowner::regrole::text FROM pg_class WHERE relname IN "
            "('t', 'v', 'vv') UNION ALL SELECT proname, proowner::regrole::text FROM pg_proc "
            "WHERE proname = 'whose'").fetchall())


def delete_account(user):
    with database.db.connection_context():
        models.User.get_by_id(user.id).delete_account()


def delete_workspace(workspace):
    with database.db.connection_context():
        Workspace.get_by_id(workspace.id).remove()


@pytest.mark.parametrize('how', ['account', 'last-workspace', 'renamed-then-account'])
def test_a_role_that_tenants_granted_things_goes_with_its_account_or_last_workspace(
        app, user, other_user, workspace_server, how):
    victim = make_user('victim@example.com', 'victim')
    [analytics], [own] = provision(user, 'analytics'), provision(victim, 'mine')
    provision(other_user, 'reports')
    run_jobs()
    entangle(workspace_server, analytics, victim, other_user)
    opened_inside = connect(shown(analytics), user='victim', password=password_of(victim))

    if how == 'last-workspace':
        delete_workspace(own)
    else:
        if how == 'renamed-then-account':
            change_handle(victim, 'victim2')
            run_jobs()
            assert 'victim2' in roles(workspace_server)
        delete_account(victim)
    assert run_jobs() == 1
    assert pending_jobs() == []
    assert not {'victim', 'victim2'} & roles(workspace_server)
    with pytest.raises(psycopg.OperationalError), opened_inside:
        opened_inside.execute('SELECT 1')  # ended: its role went
    assert owners(analytics) == {'t': 'alice', 'v': 'alice', 'vv': 'alice', 'whose': 'alice'}
    with connect(shown(analytics)) as alice:
        assert alice.execute('SELECT whose(), (SELECT sum(x) FROM t), (SELECT x FROM v), '
                             '(SELECT count(*) FROM vv)').fetchone() == ('alice', 3, 3, 2)
        assert alice.execute("SELECT count(*) FROM pg_class, aclexplode(relacl) a "
                             "WHERE a.grantee <> 0 AND a.grantee NOT IN (SELECT oid FROM pg_roles)"
                             ).fetchone() == (0,)
    assert check(app) == summary(workspace_server, 2, 2, 0, 0)

    # The handle, once free, gets a working database (the account's own, or a new user's).
    if how == 'last-workspace':
        owner, handle = victim, 'victim'
    else:
        with database.db.connection_context():
            models.HandleHold.update(until=models.utcnow()).execute()  # the hold ran out
        handle = 'victim' if how == 'account' else 'victim2'
        owner = make_user('newcomer@example.com', handle)
    [fresh] = provision(owner, 'fresh')
    assert run_jobs() == 1
    assert who(shown(fresh)) == (handle, fresh.database_name)


def test_check_finds_a_departed_role_still_holding_grants_and_the_worker_removes_it(
        app, user, other_user, workspace_server):
    """The account went and its job was lost (or failed for good under older code): the role
    is left over, with what other tenants granted it, and check says where."""
    victim = make_user('victim@example.com', 'victim')
    [analytics], _ = provision(user, 'analytics'), provision(victim, 'mine')
    provision(other_user, 'reports')
    run_jobs()
    entangle(workspace_server, analytics, victim, other_user)
    delete_account(victim)
    with database.db.connection_context():
        models.HandleHold.update(until=models.utcnow()).execute()
        PropagationJob.delete().execute()
    output = check(app)
    assert (f'role victim left over; it owns objects or holds privileges in database '
            f'{analytics.database_name}') in output
    # alice's database is open to a role that is not hers (until organizations share one)
    assert f'database {analytics.database_name} open to victim' in output
    assert output.endswith(summary(workspace_server, 2, 3, 2, 2))
    newcomer = make_user('newcomer@example.com', 'victim')
    [fresh] = provision(newcomer, 'fresh')
    assert run_jobs() == 3  # alice's, the departed user's removal, the newcomer's database
    assert check(app) == summary(workspace_server, 3, 3, 0, 0)
    assert who(shown(fresh)) == ('victim', fresh.database_name)
    assert owners(analytics)['v'] == 'alice'


@pytest.mark.parametrize('setting, value, message', [
    ('WORKSPACE_CONNECTION_LIMIT', '0', 'a whole number of connections, 1 or more'),
    ('WORKSPACE_CONNECTION_LIMIT', 'many', 'a whole number of connections, 1 or more'),
    ('WORKSPACE_TEMP_FILE_LIMIT', '1 gigabyte', 'a size such as 512MB or 1GB'),
    ('WORKSPACE_TEMP_FILE_LIMIT', '4096GB', 'at most 2047GB'),
])
def test_a_limit_setting_that_makes_no_sense_stops_the_app_naming_it(
        database_url, setting, value, message):
    with pytest.raises(RuntimeError) as refused:
        create_app({'DATABASE_URL': database_url, 'SECRET_KEY': 'x',
                    'DATABASE_PASSWORD_KEYS': TEST_PASSWORD_KEY, setting: value})
    assert str(refused.value).startswith(f'{setting} is {value!r}: ')
    assert message in str(refused.value)


def test_what_a_tenant_sees_of_another_is_names_never_passwords_queries_or_data(
        app, user, other_user, workspace_server):
    """As docs/operations.md's tenancy table says: names in the catalogs, nothing more."""
    [analytics] = provision(user, 'analytics')
    [reports] = provision(other_user, 'reports')
    run_jobs()
    with connect(shown(reports)) as bob:
        bob.execute("CREATE TABLE secrets AS SELECT 'bob''s data' AS s")
        bob.execute('BEGIN')
        bob.execute('SELECT s FROM secrets')  # its session stays in pg_stat_activity meanwhile
        with connect(shown(analytics)) as alice:
            assert {'alice', 'bob'} <= {name for (name,) in alice.execute(
                'SELECT rolname FROM pg_roles')}
            assert reports.database_name in {name for (name,) in alice.execute(
                'SELECT datname FROM pg_database')}
            assert alice.execute("SELECT rolpassword FROM pg_roles WHERE rolname = 'bob'"
                                 ).fetchone() == ('********',)
            with pytest.raises(DENIED):
                alice.execute('SELECT rolpassword FROM pg_authid')
            assert alice.execute(
                "SELECT datname, query, client_addr FROM pg_stat_activity WHERE usename = 'bob'"
            ).fetchall() == [(reports.database_name, '<insufficient privilege>', None)]


@pytest.mark.parametrize('settings, said', [
    ({'WORKSPACE_CONNECTION_LIMIT': '5', 'WORKSPACE_TEMP_FILE_LIMIT': '512MB'},
     'with up to 5 connections open at once across them and up to 512MB of temporary files '
     'per connection.'),
    ({'WORKSPACE_CONNECTION_LIMIT': '1', 'WORKSPACE_TEMP_FILE_LIMIT': '-1'},
     'with up to 1 connection open at once across them.'),
])
@pytest.mark.parametrize('htmx', [False, True], ids=['page', 'fragment'])
def test_the_home_page_says_the_limits_a_users_connections_meet(
        database_url, settings, said, htmx):
    configured = create_app({
        'TESTING': True, 'SECRET_KEY': 'x', 'DATABASE_URL': database_url,
        'GRAVATAR_ENABLED': False, 'DATABASE_PASSWORD_KEYS': TEST_PASSWORD_KEY,
        'PASSWORD_HASH_METHOD': QUICK_PASSWORD_HASH, **settings})
    database.migrate(database.db.obj)
    try:
        make_user()
        client = configured.test_client()
        assert log_in(client, 'alice').status_code == 302
        response = client.get('/', headers={'HX-Request': 'true'} if htmx else {})
        assert response.status_code == 200
        hint = html(response).find(id='workspace-handle-hint')
        assert hint.get_text(strip=True).endswith('You can have up to 10 workspaces, ' + said)
    finally:
        database.db.close()
