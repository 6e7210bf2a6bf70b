"""Workspaces on the run's real PostgreSQL server (conftest's `workspace_server`): what Reveal,
Copy and the API show connects as it is; rotations, handle changes and deletions reach the
server's catalogs once the worker has run; a role reaches its own databases and nothing else;
and `flask --app app workspaces check` names drift made behind Penstock's back and has it
repaired. Nothing of PostgreSQL is stood in for: every check is a real connection or a query
of the server's catalogs. tests/test_workspace_servers_two.py (slow: servers of its own)
shares the helpers here."""
import threading
import time

import psycopg
import pytest
from psycopg import sql

import database
import models
import propagation
import workspace_servers
from tests.helpers import LEASE, PASSWORD, csrf_token, html, make_user, run_jobs
from workspaces import DatabasePassword, PropagationJob, Workspace

PROFILE = '/user/alice/settings/profile'
ADVANCED = '/user/alice/settings/advanced'
WRONG_PASSWORD = 'password authentication failed'
NO_CONNECT = 'permission denied for database'


# Through the pages and the API, as a person would

def create(client, handle):
    """New workspace `handle` through the home page's form; returns its row."""
    response = client.post('/workspaces', data={'handle': handle,
                                                'csrf_token': csrf_token(client, '/')})
    assert response.status_code == 303
    with database.db.connection_context():
        return Workspace.get(Workspace.handle == handle)


def copied(client, workspace):
    """What the Copy button puts on the clipboard."""
    response = client.post(f'/workspaces/{workspace.id}/connection/copy',
                           headers={'X-CSRFToken': csrf_token(client, '/')})
    assert response.status_code == 200 and response.mimetype == 'text/plain'
    return response.get_data(as_text=True)


def revealed(client, workspace):
    """The connection string Reveal password shows (without JavaScript)."""
    response = client.post(f'/workspaces/{workspace.id}/connection',
                           data={'csrf_token': csrf_token(client, '/')})
    assert response.status_code == 200
    return html(response).find('code', id=f'connection-{workspace.id}-string').get_text()


def from_api(api, handle='alice'):
    """{workspace handle: (password status, connection string with the password in it)}, from
    the API's list (masked) and its password endpoint, as a script would put them together."""
    password = api('GET', f'/api/v0/user/{handle}/password').get_json()['$password']
    listed = api('GET', f'/api/v0/user/{handle}/workspace').get_json()['items']
    masked = DatabasePassword.mask(password)
    assert all(masked in item['connection_string'] and password not in item['connection_string']
               for item in listed)
    return {item['handle']: (item['password_status'],
                             item['connection_string'].replace(masked, password))
            for item in listed}


# Made directly, where the page is not what the test is about

def provision(user, *handles):
    with database.db.connection_context():
        owner = models.User.get_by_id(user.id)
        return [Workspace.provision(owner, handle) for handle in handles]


def shown(workspace):
    """The workspace's connection string as Copy gives it, read afresh (handle, password)."""
    with database.db.connection_context():
        workspace = Workspace.get_by_id(workspace.id)
        return workspace.connection_string(DatabasePassword.for_user(workspace.user_id).password)


def password_of(user):
    with database.db.connection_context():
        return DatabasePassword.for_user(user.id).password


def rotate(user):
    with database.db.connection_context():
        return DatabasePassword.rotate(models.User.get_by_id(user.id)).password


def change_handle(user, handle):
    with database.db.connection_context():
        models.User.get_by_id(user.id).change_handle(handle)


def states(user):
    """{workspace handle: 'pending' or 'applied'} against the current password."""
    with database.db.connection_context():
        version = DatabasePassword.for_user(user.id).version
        handle = models.User.get_by_id(user.id).handle
        return {w.handle: w.password_state(version, handle) for w in Workspace.for_user(user.id)}


def pending_jobs():
    with database.db.connection_context():
        return list(PropagationJob.select().where(PropagationJob.status == 'pending'))


# On the server

def connect(conninfo, **options):
    """A new connection, with `options` (user, password, dbname) over the string's."""
    return psycopg.connect(conninfo, autocommit=True, connect_timeout=5, **options)


def who(conninfo, **options):
    """(current_user, current_database()) of a new connection."""
    with connect(conninfo, **options) as connection:
        return connection.execute('SELECT current_user, current_database()').fetchone()


def refusal(conninfo, **options):
    """Why the server refuses a new connection (failing the test if it accepts it)."""
    with pytest.raises(psycopg.OperationalError) as refused:
        connect(conninfo, **options).close()
    return str(refused.value)


def roles(workspace_server):
    return {name for (name,) in workspace_server.query('SELECT rolname FROM pg_roles')}


def databases(workspace_server):
    return {name for (name,) in workspace_server.query('SELECT datname FROM pg_database')}


def marks(workspace_server, user):
    """The comments that mark the user's role and databases on the server."""
    return workspace_server.query(
        'SELECT description FROM pg_shdescription WHERE description LIKE %s',
        (workspace_servers.role_mark(user.id) + '%',))


def connecting(workspace_server, name):
    """The roles the database's ACL gives CONNECT ('PUBLIC' for everyone)."""
    return {grantee for (grantee,) in workspace_server.query(
        "SELECT coalesce(r.rolname, 'PUBLIC') FROM pg_database d, aclexplode(d.datacl) a "
        "LEFT JOIN pg_roles r ON r.oid = a.grantee "
        "WHERE d.datname = %s AND a.privilege_type = 'CONNECT'", (name,))}


# The connection string connects

def test_the_shown_string_connects_as_the_user_to_the_workspace_once_it_is_applied(
        client, logged_in, api, workspace_server):
    analytics = create(client, 'analytics')
    [(status, listed)] = from_api(api).values()
    assert status == 'pending', 'no database before the worker has run'
    string = copied(client, analytics)
    assert WRONG_PASSWORD in refusal(string), 'no role on the server yet'
    assert analytics.database_name not in databases(workspace_server)

    assert run_jobs() == 1
    assert from_api(api) == {'analytics': ('applied', string)}
    assert revealed(client, analytics) == string == listed
    assert string.startswith('postgresql://alice:')
    assert (f'@alice-analytics.workspaces.penstock.test:{workspace_server.port}/'
            f'{analytics.database_name}?hostaddr=127.0.0.1') in string
    assert who(string) == ('alice', analytics.database_name)


def test_each_workspace_string_reaches_its_own_database(client, logged_in):
    analytics, staging = create(client, 'analytics'), create(client, 'staging')
    run_jobs()
    assert who(copied(client, analytics)) == ('alice', analytics.database_name)
    assert who(copied(client, staging)) == ('alice', staging.database_name)
    assert analytics.database_name != staging.database_name


def test_a_workspace_made_before_workspaces_were_real_is_placed_and_made_at_start(
        app, user, workspace_server):
    [analytics] = provision(user, 'analytics')
    with database.db.connection_context():  # as migration 0006 leaves an older row
        Workspace.update(server=None).execute()
        PropagationJob.delete().execute()
    assert shown(analytics).endswith(f':9193/{analytics.database_name}'), 'nowhere yet'
    propagation.start_servers()
    with database.db.connection_context():
        assert Workspace.get_by_id(analytics.id).server == f'127.0.0.1:{workspace_server.port}'
    assert states(user) == {'analytics': 'pending'}
    assert run_jobs() == 1
    assert states(user) == {'analytics': 'applied'}
    assert who(shown(analytics)) == ('alice', analytics.database_name)


# Rotate Password

def test_a_rotation_reaches_the_server_once_applied_and_open_sessions_survive(
        client, logged_in, workspace_server):
    analytics, staging = create(client, 'analytics'), create(client, 'staging')
    run_jobs()
    old = {w.handle: copied(client, w) for w in (analytics, staging)}
    opened = connect(old['analytics'])
    response = client.post(PROFILE + '/password/rotate',
                           data={'csrf_token': csrf_token(client, PROFILE)})
    assert response.status_code == 303
    new = {w.handle: copied(client, w) for w in (analytics, staging)}
    assert new != old
    assert states(logged_in) == {'analytics': 'pending', 'staging': 'pending'}
    assert who(old['staging']) == ('alice', staging.database_name), 'old until applied'
    assert WRONG_PASSWORD in refusal(new['staging'])

    assert run_jobs() == 1, 'one job for the user on the one server'
    assert states(logged_in) == {'analytics': 'applied', 'staging': 'applied'}
    for workspace in (analytics, staging):
        assert WRONG_PASSWORD in refusal(old[workspace.handle])
        assert who(new[workspace.handle]) == ('alice', workspace.database_name)
    with opened:
        assert opened.execute('SELECT 1').fetchone() == (1,), 'not terminated by the rotation'


def test_a_rotation_through_the_api_gives_the_password_the_server_then_takes(
        client, logged_in, api):
    analytics = create(client, 'analytics')
    run_jobs()
    [(_, old)] = from_api(api).values()
    answer = api('POST', '/api/v0/user/alice/password')
    assert answer.status_code == 201
    rotated = answer.get_json()['$password']
    assert from_api(api)['analytics'][0] == 'pending'
    run_jobs()
    status, new = from_api(api)['analytics']
    assert status == 'applied' and rotated in new and new == copied(client, analytics)
    assert who(new) == ('alice', analytics.database_name)
    assert WRONG_PASSWORD in refusal(old)


# Isolation

def test_another_users_role_cannot_connect_to_a_workspace(app, user, other_user):
    [alices], [bobs] = provision(user, 'analytics'), provision(other_user, 'analytics')
    run_jobs()
    alice, bob = shown(alices), shown(bobs)
    alice_password, bob_password = password_of(user), password_of(other_user)
    assert who(bob) == ('bob', bobs.database_name)
    assert NO_CONNECT in refusal(alice, user='bob', password=bob_password)
    assert NO_CONNECT in refusal(bob, user='alice', password=alice_password)
    assert WRONG_PASSWORD in refusal(alice, password=bob_password)
    for server_database in ('postgres', 'template1'):
        assert NO_CONNECT in refusal(alice, dbname=server_database)


BEYOND_A_WORKSPACE = (
    'CREATE DATABASE elsewhere', 'CREATE ROLE mallory LOGIN', 'SET ROLE penstock',
    'SET SESSION AUTHORIZATION penstock', 'ALTER ROLE alice SUPERUSER', 'ALTER ROLE alice CREATEDB',
    'ALTER ROLE alice CREATEROLE', 'ALTER ROLE alice REPLICATION', 'ALTER ROLE alice BYPASSRLS',
    'GRANT penstock TO alice', 'CREATE SCHEMA elsewhere', "COPY (SELECT 1) TO PROGRAM 'true'")


def test_in_her_own_database_the_role_can_make_tables_and_nothing_more(app, user):
    [analytics] = provision(user, 'analytics')
    run_jobs()
    allowed = []
    with connect(shown(analytics)) as connection:
        for statement in BEYOND_A_WORKSPACE:
            try:
                connection.execute(statement)
            except psycopg.errors.InsufficientPrivilege:
                continue
            allowed.append(statement)
        assert connection.execute('SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles '
                                  'WHERE rolname = current_user').fetchone() == (
            False, False, False)
        connection.execute('CREATE TABLE public.notes (id int PRIMARY KEY, body text)')
        connection.execute("INSERT INTO notes VALUES (1, 'mine')")
        assert connection.execute('SELECT body FROM notes').fetchall() == [('mine',)]
    assert allowed == []


def test_the_role_has_no_powers_and_its_database_is_open_to_it_alone(
        app, user, workspace_server):
    [analytics] = provision(user, 'analytics')
    run_jobs()
    name = analytics.database_name
    assert workspace_server.query(
        'SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, '
        "rolcanlogin FROM pg_roles WHERE rolname = 'alice'") == [
        (False, False, False, False, False, True)]
    assert connecting(workspace_server, name) == {'alice', 'penstock'}
    assert workspace_server.query(
        "SELECT pg_get_userbyid(datdba), has_database_privilege('public', datname, 'CONNECT') "
        'FROM pg_database WHERE datname = %s', (name,)) == [('penstock', False)]
    assert sorted(marks(workspace_server, user)) == [
        (f'penstock user {user.id}',), (f'penstock user {user.id} workspace {analytics.id}',)]
    with connect(shown(analytics)) as connection:
        assert connection.execute("SELECT pg_get_userbyid(nspowner) FROM pg_namespace "
                                  "WHERE nspname = 'public'").fetchone() == ('alice',)


# A new handle

def test_a_handle_changed_on_the_advanced_page_renames_the_role(
        client, logged_in, workspace_server):
    analytics = create(client, 'analytics')
    run_jobs()
    old = copied(client, analytics)
    response = client.post(ADVANCED + '/handle', data={
        'handle': 'alicia', 'previewed': '1', 'csrf_token': csrf_token(client, ADVANCED)})
    assert response.status_code == 303
    new = copied(client, analytics)
    assert new.startswith('postgresql://alicia:')
    assert '@alicia-analytics.workspaces.penstock.test:' in new
    assert who(old) == ('alice', analytics.database_name), 'renamed once the worker has run'

    assert run_jobs() == 1
    assert who(new) == ('alicia', analytics.database_name)
    assert WRONG_PASSWORD in refusal(old)
    assert 'alice' not in roles(workspace_server) and 'alicia' in roles(workspace_server)


def test_a_handle_changed_through_the_api_renames_the_role(
        client, logged_in, api, workspace_server):
    analytics = create(client, 'analytics')
    run_jobs()
    [(_, old)] = from_api(api).values()
    answer = api('PATCH', '/api/v0/user/alice', {'handle': 'alicia', 'display_name': 'Alicia'})
    assert answer.status_code == 200
    [(_, new)] = from_api(api, 'alicia').values()
    assert new.startswith('postgresql://alicia:') and '@alicia-analytics.' in new
    run_jobs()
    assert who(new) == ('alicia', analytics.database_name)
    assert WRONG_PASSWORD in refusal(old)
    assert 'alice' not in roles(workspace_server)


def test_a_handle_change_renames_the_role_that_reaches_every_workspace_and_open_sessions_stay(
        app, user, workspace_server):
    analytics, staging = provision(user, 'analytics', 'staging')
    run_jobs()
    old = shown(staging)
    opened = connect(old)
    change_handle(user, 'alicia')
    # Until the role is renamed, the new string does not connect: the workspaces say so.
    assert states(user) == {'analytics': 'pending', 'staging': 'pending'}
    run_jobs()
    assert states(user) == {'analytics': 'applied', 'staging': 'applied'}
    assert who(shown(analytics)) == ('alicia', analytics.database_name)
    assert who(shown(staging)) == ('alicia', staging.database_name)
    assert WRONG_PASSWORD in refusal(old)
    assert connecting(workspace_server, staging.database_name) == {'alicia', 'penstock'}
    assert 'alice' not in roles(workspace_server)
    with opened:
        assert opened.execute('SELECT current_user').fetchone() == ('alicia',)


def test_a_new_handle_taken_by_a_role_penstock_does_not_own_waits_for_it_to_go(
        app, user, workspace_server):
    """A role of that name made on the server by someone else is left alone: the job stays
    pending with the reason, and goes through once the role is gone."""
    [analytics] = provision(user, 'analytics')
    run_jobs()
    workspace_server.connection.execute('CREATE ROLE alicia')
    try:
        change_handle(user, 'alicia')
        run_jobs()
        [job] = pending_jobs()
        assert job.last_error == ("Drift: a role named alicia exists on the server and is not "
                                  "this user's")
        assert who(shown(analytics), user='alice') == ('alice', analytics.database_name)
        assert 'role is named alice, not alicia (a job was pending already)' in check(app)
    finally:
        workspace_server.connection.execute('DROP ROLE alicia')
    with database.db.connection_context():
        PropagationJob.update(run_after=models.utcnow()).execute()
    assert run_jobs() == 1
    assert pending_jobs() == []
    assert who(shown(analytics)) == ('alicia', analytics.database_name)


# Deletion

def test_deleting_workspaces_on_the_home_page_drops_each_database_and_with_the_last_the_role(
        client, logged_in, workspace_server):
    analytics, staging = create(client, 'analytics'), create(client, 'staging')
    run_jobs()
    opened = connect(copied(client, analytics))
    for workspace in (analytics, staging):
        assert client.post(f'/workspaces/{workspace.id}/delete', data={
            'csrf_token': csrf_token(client, '/')}).status_code == 303
        assert workspace.database_name in databases(workspace_server), 'until the worker runs'
        run_jobs()
        assert workspace.database_name not in databases(workspace_server)
        if workspace is analytics:
            assert 'alice' in roles(workspace_server), 'staging still needs it'
            with pytest.raises(psycopg.OperationalError), opened:
                opened.execute('SELECT 1')  # terminated: its database went
    assert 'alice' not in roles(workspace_server)
    assert marks(workspace_server, logged_in) == []


@pytest.mark.parametrize('how', ['page', 'api'])
def test_deleting_the_account_drops_its_databases_and_role(
        client, logged_in, api, workspace_server, how):
    analytics, staging = create(client, 'analytics'), create(client, 'staging')
    run_jobs()
    opened = connect(copied(client, staging))
    if how == 'page':
        response = client.post(ADVANCED + '/delete', data={
            'confirm': 'alice', 'csrf_token': csrf_token(client, ADVANCED + '/delete')})
        assert response.status_code == 303
    else:
        assert api('DELETE', '/api/v0/user/alice', {'password': PASSWORD}).status_code == 200
    assert {'alice'} <= roles(workspace_server), 'until the worker runs'

    assert run_jobs() == 1
    assert not {analytics.database_name, staging.database_name} & databases(workspace_server)
    assert 'alice' not in roles(workspace_server)
    assert marks(workspace_server, logged_in) == []
    assert pending_jobs() == []
    with pytest.raises(psycopg.OperationalError), opened:
        opened.execute('SELECT 1')


def test_a_database_left_unmarked_by_a_crash_is_taken_up_by_the_next_run(
        app, user, workspace_server):
    """CREATE DATABASE cannot share a transaction with the rest: a worker that died right
    after it left the database unmarked, and the next run finishes it."""
    [analytics] = provision(user, 'analytics')
    workspace_server.connection.execute(sql.SQL('CREATE DATABASE {}').format(
        sql.Identifier(analytics.database_name)))
    assert run_jobs() == 1
    assert who(shown(analytics)) == ('alice', analytics.database_name)
    assert connecting(workspace_server, analytics.database_name) == {'alice', 'penstock'}
    assert (f'penstock user {user.id} workspace {analytics.id}',) in marks(workspace_server, user)


# Concurrency

def test_two_rotations_in_a_row_leave_the_newest_password_everywhere(app, user):
    analytics, staging = provision(user, 'analytics', 'staging')
    run_jobs()
    first = shown(analytics)
    rotate(user)
    second = shown(analytics)
    rotate(user)
    assert run_jobs() == 1, 'the second job was carried out with the first'
    assert states(user) == {'analytics': 'applied', 'staging': 'applied'}
    assert pending_jobs() == []
    for old in (first, second):
        assert WRONG_PASSWORD in refusal(old)
    assert who(shown(analytics)) == ('alice', analytics.database_name)
    assert who(shown(staging)) == ('alice', staging.database_name)


def test_a_rotation_and_a_handle_change_queued_together_end_in_both(
        app, user, workspace_server):
    analytics, staging = provision(user, 'analytics', 'staging')
    run_jobs()
    old = shown(analytics)
    rotate(user)
    change_handle(user, 'alicia')
    rotate(user)
    run_jobs()
    assert states(user) == {'analytics': 'applied', 'staging': 'applied'}
    assert WRONG_PASSWORD in refusal(old)
    assert WRONG_PASSWORD in refusal(shown(analytics), user='alice')
    assert who(shown(analytics)) == ('alicia', analytics.database_name)
    assert who(shown(staging)) == ('alicia', staging.database_name)
    assert 'alice' not in roles(workspace_server)


@pytest.mark.parametrize('moment', ['before', 'after'])
def test_a_handle_change_and_rotation_committed_while_a_converge_runs_are_applied_next(
        app, user, workspace_server, monkeypatch, moment):
    """A real worker thread is held inside Server.converge (`before` its statements, or
    `after` them, before the jobs are marked done) while the handle changes and the password
    rotates again: what it read is stale, so the jobs those changes queued must stay pending
    and be carried out next."""
    analytics, staging = provision(user, 'analytics', 'staging')
    run_jobs()
    old = shown(analytics)
    rotate(user)
    inside, go = threading.Event(), threading.Event()
    converge = workspace_servers.Server.converge

    def held(server, connection, desired):
        if not inside.is_set():
            inside.set()
            if moment == 'before':
                assert go.wait(30)
        converge(server, connection, desired)
        if moment == 'after' and not go.is_set():
            assert go.wait(30)

    monkeypatch.setattr(workspace_servers.Server, 'converge', held)
    stop = threading.Event()
    worker = threading.Thread(target=propagation.run,
                              args=(models.Config.workspace_servers, LEASE, 0.02, stop))
    worker.start()
    try:
        assert inside.wait(30)
        change_handle(user, 'alicia')
        rotate(user)
        go.set()
        deadline = time.monotonic() + 30
        while pending_jobs() and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        go.set()
        stop.set()
        worker.join(30)
    assert pending_jobs() == []
    assert states(user) == {'analytics': 'applied', 'staging': 'applied'}
    assert WRONG_PASSWORD in refusal(old)
    assert who(shown(analytics)) == ('alicia', analytics.database_name)
    assert who(shown(staging)) == ('alicia', staging.database_name)
    assert 'alice' not in roles(workspace_server)


def test_two_workers_at_once_bring_every_user_to_the_newest_state(app, user, other_user,
                                                                  workspace_server):
    mine = provision(user, 'analytics', 'staging')
    theirs = provision(other_user, 'reports')
    run_jobs()
    for person, handle in ((user, 'alicia'), (other_user, 'robert')):
        rotate(person)
        change_handle(person, handle)
        rotate(person)
    workers = [threading.Thread(target=run_jobs) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert pending_jobs() == []
    for workspace, role in [(w, 'alicia') for w in mine] + [(w, 'robert') for w in theirs]:
        assert who(shown(workspace)) == (role, workspace.database_name)
    assert not {'alice', 'bob'} & roles(workspace_server)


# flask --app app workspaces check

def check(app):
    result = app.test_cli_runner().invoke(args=['workspaces', 'check'])
    assert result.exit_code == 0, result.output
    return result.output


def summary(workspace_server, workspaces, users, differ, queued):
    return (f'127.0.0.1:{workspace_server.port}: {workspaces} workspace(s) of {users} user(s); '
            f'{differ} differ{"s" if differ == 1 else ""} from the metadata, '
            f'{queued} job(s) queued\n')


def test_check_finds_nothing_on_a_matching_server(app, user, other_user, workspace_server):
    provision(user, 'analytics', 'staging')
    provision(other_user, 'reports')
    run_jobs()
    assert check(app) == summary(workspace_server, 3, 2, 0, 0)
    assert pending_jobs() == []


def _password(server, user, staging):
    server.connection.execute("ALTER ROLE alice PASSWORD 'x'")
    return 'password not current'


def _dropped(server, user, staging):
    server.connection.execute(sql.SQL('DROP DATABASE {} WITH (FORCE)').format(
        sql.Identifier(staging.database_name)))
    return f'database {staging.database_name} (workspace {staging.id}) missing'


def _public(server, user, staging):
    server.connection.execute(sql.SQL('GRANT CONNECT ON DATABASE {} TO PUBLIC').format(
        sql.Identifier(staging.database_name)))
    return f'database {staging.database_name} open to PUBLIC'


def _bob(server, user, staging):
    server.connection.execute(sql.SQL('GRANT CONNECT ON DATABASE {} TO bob').format(
        sql.Identifier(staging.database_name)))
    return f'database {staging.database_name} open to bob'


def _createdb(server, user, staging):
    server.connection.execute('ALTER ROLE alice CREATEDB')
    return 'role attributes wrong: createdb'


def _workspace_gone(server, user, staging):
    """The workspace is deleted and its job lost (a restore of the metadata, say)."""
    with database.db.connection_context():
        Workspace.get_by_id(staging.id).remove()
        PropagationJob.delete().execute()
    return f'database {staging.database_name} left over'


def _stray(server, user, staging):
    """A database marked as a workspace of the user that never was one."""
    server.connection.execute('CREATE DATABASE stray')
    server.connection.execute("COMMENT ON DATABASE stray IS %s" % sql.quote(
        workspace_servers.database_mark(user.id, 'w_never')))
    return 'database stray left over'


@pytest.mark.parametrize('drift', [
    _password, _dropped, _createdb, _workspace_gone, _stray,
    _public, _bob,
], ids=lambda drift: drift.__name__.strip('_'))
def test_check_names_drift_queues_a_job_and_the_worker_repairs_it(
        app, user, other_user, workspace_server, drift):
    analytics, staging = provision(user, 'analytics', 'staging')
    provision(other_user, 'reports')
    run_jobs()
    problem = drift(workspace_server, user, staging)
    workspaces = 2 if drift is _workspace_gone else 3
    output = check(app)
    assert output == (f'127.0.0.1:{workspace_server.port}: user {user.id}: {problem} '
                      '(queued a job)\n' + summary(workspace_server, workspaces, 2, 1, 1))
    [job] = pending_jobs()
    assert (job.user_id, job.reason) == (user.id, 'workspaces.check')
    assert check(app).endswith('(a job was pending already)\n'
                               + summary(workspace_server, workspaces, 2, 1, 0))

    assert run_jobs() == 1
    assert check(app) == summary(workspace_server, workspaces, 2, 0, 0)
    assert who(shown(analytics)) == ('alice', analytics.database_name)


def test_check_names_every_drift_of_a_user_at_once(app, user, workspace_server):
    analytics, staging = provision(user, 'analytics', 'staging')
    run_jobs()
    problems = [drift(workspace_server, user, staging)
                for drift in (_password, _dropped, _createdb, _stray)]
    line = check(app).splitlines()[0]
    assert line.startswith(f'127.0.0.1:{workspace_server.port}: user {user.id}: ')
    assert all(problem in line for problem in problems), line
    run_jobs()
    assert check(app) == summary(workspace_server, 2, 1, 0, 0)
    assert who(shown(staging)) == ('alice', staging.database_name)


def test_check_finds_the_role_and_databases_of_a_deleted_account_whose_job_was_lost(
        app, user, workspace_server):
    analytics, staging = provision(user, 'analytics', 'staging')
    run_jobs()
    with database.db.connection_context():
        models.User.get_by_id(user.id).delete_account()
        PropagationJob.delete().execute()
    output = check(app)
    for problem in ('role alice left over', f'database {analytics.database_name} left over',
                    f'database {staging.database_name} left over'):
        assert problem in output
    assert output.endswith(summary(workspace_server, 0, 1, 1, 1))
    run_jobs()
    assert check(app) == summary(workspace_server, 0, 0, 0, 0)
    assert 'alice' not in roles(workspace_server) and marks(workspace_server, user) == []


@pytest.mark.parametrize('breakage', [
    'ALTER ROLE alice NOLOGIN',
    pytest.param('REVOKE CONNECT ON DATABASE {database} FROM alice', id='connect-revoked'),
    pytest.param("ALTER ROLE alice VALID UNTIL '2000-01-01'", id='expired'),
    pytest.param('ALTER ROLE alice CONNECTION LIMIT 0', id='no-connections'),
])
def test_a_workspace_that_stopped_connecting_is_found_by_check_and_repaired(
        app, user, workspace_server, breakage):
    [analytics] = provision(user, 'analytics')
    run_jobs()
    workspace_server.connection.execute(breakage.format(database=analytics.database_name))
    refusal(shown(analytics))
    assert check(app).endswith(summary(workspace_server, 1, 1, 1, 1))
    assert run_jobs() == 1
    assert who(shown(analytics)) == ('alice', analytics.database_name)


# Names and secrets as the server sees them

@pytest.mark.parametrize('handle', ['select', 'all', 'current-user', 'x-y', '0day'])
def test_a_handle_that_is_an_sql_word_or_has_hyphens_is_a_role_that_connects(app, handle):
    person = make_user(f'{handle}@example.com', handle)
    [analytics] = provision(person, 'analytics')
    run_jobs()
    assert who(shown(analytics)) == (handle, analytics.database_name)
    change_handle(person, handle + '2')
    run_jobs()
    assert who(shown(analytics)) == (handle + '2', analytics.database_name)


def test_the_server_is_sent_a_verifier_never_the_password(app, user, workspace_server):
    """With every statement logged, a workspace made, a rotation and a new handle leave
    SCRAM verifiers in the server's log and neither password."""
    log = workspace_server.embedded.directory / 'server.log'
    start = log.stat().st_size
    workspace_server.connection.execute("ALTER SYSTEM SET log_statement = 'all'")
    workspace_server.connection.execute('SELECT pg_reload_conf()')
    try:
        provision(user, 'analytics')
        run_jobs()
        passwords = [password_of(user), rotate(user)]
        change_handle(user, 'alicia')
        run_jobs()
    finally:
        workspace_server.connection.execute('ALTER SYSTEM RESET log_statement')
        workspace_server.connection.execute('SELECT pg_reload_conf()')
    with open(log, errors='replace') as text:
        text.seek(start)
        logged = text.read()
    assert 'CREATE ROLE "alice"' in logged and 'ALTER ROLE "alice" RENAME TO "alicia"' in logged
    assert logged.count("PASSWORD 'SCRAM-SHA-256$") == 2, 'made, then rotated'
    assert not [password for password in passwords if password in logged]


# An admin that is not a superuser (docs/operations.md's recipe)

@pytest.fixture
def limited_admin(workspace_server):
    """Servers reaching the run's server as `penstock_limited`: CREATEROLE and CREATEDB, SET
    on temp_file_limit, no superuser, and (with `verifiers`) SELECT on pg_authid."""
    password = 'limited-admin-password'
    statements = [
        f"CREATE ROLE penstock_limited LOGIN CREATEROLE CREATEDB PASSWORD '{password}'",
        "ALTER ROLE penstock_limited SET createrole_self_grant = 'set, inherit'",
        'GRANT CONNECT ON DATABASE postgres, template1 TO penstock_limited',
        'GRANT SET ON PARAMETER temp_file_limit TO penstock_limited']
    for statement in statements:
        workspace_server.connection.execute(statement)
    url = f'postgresql://penstock_limited:{password}@127.0.0.1:{workspace_server.port}/postgres'

    def servers(verifiers):
        grant = 'GRANT' if verifiers else 'REVOKE'
        workspace_server.connection.execute(
            f'{grant} SELECT ON pg_authid {"TO" if verifiers else "FROM"} penstock_limited')
        return workspace_servers.Servers([workspace_servers.Server(url)])

    yield servers
    workspace_server.clear()  # its roles and databases first: it is a member of each role
    workspace_server.connection.execute('DROP OWNED BY penstock_limited')
    workspace_server.connection.execute('DROP ROLE penstock_limited')


@pytest.mark.parametrize('verifiers', [True, False], ids=['reads-verifiers', 'no-verifiers'])
def test_an_admin_that_is_no_superuser_makes_rotates_renames_and_drops(
        app, user, limited_admin, workspace_server, verifiers):
    servers = limited_admin(verifiers)
    [analytics] = provision(user, 'analytics')
    run_jobs(servers)
    assert who(shown(analytics)) == ('alice', analytics.database_name)
    old = shown(analytics)
    with database.db.connection_context():
        DatabasePassword.rotate(models.User.get_by_id(user.id))
    change_handle(user, 'alice2')
    [second] = provision(user, 'staging')
    run_jobs(servers)
    assert WRONG_PASSWORD in refusal(old)
    assert who(shown(analytics)) == ('alice2', analytics.database_name)
    assert who(shown(second)) == ('alice2', second.database_name)
    with database.db.connection_context():
        problems = [propagation.differences(job.desired()[1], found, 'penstock_limited')
                    for job in [PropagationJob(user_id=user.id, server=analytics.server)]
                    for found in [servers[analytics.server].found(
                        workspace_server.connection, user.id)]]
    assert problems == [[]]  # an admin that cannot read verifiers does not see drift in them

    with database.db.connection_context():
        models.User.get_by_id(user.id).delete_account()
    run_jobs(servers)
    assert 'alice2' not in roles(workspace_server) and marks(workspace_server, user) == []
