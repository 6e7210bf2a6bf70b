"""Finding 1 of round three, as an attacker acts: a leaked database password must not outlive
a rotation or Reset authentication. A role that sets its own password from inside a workspace
has Penstock's put back by the periodic check (watch.py) and its connections ended; Reset
authentication and Rotate Password with Also end open connections end every open connection;
rotation is limited to 5 an hour; transactions left idle are ended. Everything happens on the
run's real PostgreSQL server (conftest's `workspace_server`)."""
import datetime
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

import database
import mail
import models
import watch
from tests.helpers import HTMX, LEASE, audit, csrf_token, html, run_jobs
from tests.test_real_workspaces import (WRONG_PASSWORD, connect, copied, create,  # noqa: F401
                                        limited_admin, password_of, provision, refusal, shown,
                                        states, who)
from workspaces import DatabasePassword, PropagationJob, RoleVerifier, ServerCheck

PROFILE = '/user/alice/settings/profile'
ADVANCED = '/user/alice/settings/advanced'
AUDIT = '/user/alice/settings/audit'
STOLEN = 'mallory-knows-this'
DUE = datetime.timedelta(0)  # every server is due at once
IDLE = 600  # seconds: the default idle transaction timeout


def check(idle_timeout=IDLE, servers=None):
    """One pass of the periodic check, as a worker runs it; its reports."""
    with database.db.connection_context():
        return watch.check_servers(servers or models.Config.workspace_servers, LEASE, DUE,
                                   idle_timeout)


def is_ended(connection):
    """Whether the server ended this connection (its next statement fails)."""
    try:
        connection.execute('SELECT 1')
    except psycopg.OperationalError:
        return True
    return False


def with_password(string, password):
    """`string` (a connection string) with `password` in place of the user's."""
    user, rest = string.split('@', 1)
    return user.rsplit(':', 1)[0] + ':' + password + '@' + rest


@pytest.fixture
def opened():
    """connect(), each connection closed when the test ends (whether or not the server ended
    it first)."""
    made = []

    def open_connection(conninfo):
        made.append(connect(conninfo))
        return made[-1]
    yield open_connection
    for connection in made:
        connection.close()


def take_over(opened, string):
    """What an attacker holding `string` does: connect, and set a password of their own on
    the role from inside. Returns the open connection."""
    attacker = opened(string)
    attacker.execute(f"ALTER ROLE CURRENT_USER PASSWORD '{STOLEN}'")
    return attacker


def emails(kind, user):
    with database.db.connection_context():
        return list(mail.Email.select().where(mail.Email.kind == kind,
                                              mail.Email.user_id == user.id))


def password_version(user):
    with database.db.connection_context():
        return DatabasePassword.for_user(user.id).version


def verifier_on_server(workspace_server, role='alice'):
    [(verifier,)] = workspace_server.query(
        'SELECT rolpassword FROM pg_authid WHERE rolname = %s', (role,))
    return verifier


# A password set from inside a workspace

def test_a_password_set_from_inside_is_put_back_its_connections_ended_and_the_user_told(
        client, logged_in, workspace_server, opened):
    analytics = create(client, 'analytics')
    run_jobs()
    string = copied(client, analytics)
    attacker = take_over(opened, string)
    assert who(with_password(string, STOLEN)) == ('alice', analytics.database_name)
    assert WRONG_PASSWORD in refusal(string), "the owner's password stopped working"

    [report] = check()
    assert report.repaired == [logged_in.id]
    assert is_ended(attacker)
    assert who(string) == ('alice', analytics.database_name), 'Penstock\'s works again'
    assert WRONG_PASSWORD in refusal(with_password(string, STOLEN))
    assert states(logged_in) == {'analytics': 'applied'}
    with database.db.connection_context():
        [record] = audit('user.password.drift')
        assert record.identity_id == logged_in.id and record.actor_ip is None
        assert record.data == '{"role": "alice", "workspaces": 1}'
    [email] = emails('user.password.drift', logged_in)
    assert email.to_address == 'alice@example.com'
    subject, text, _html, _headers = mail.render(email)
    assert subject == 'Your database password was changed from inside a workspace'
    assert 'put your database password back' in ' '.join(text.split())
    assert 'Also end open connections' in text and STOLEN not in text

    page = html(client.get(AUDIT, query_string={'action_type': 'user.password.drift'}))
    [sentence] = [' '.join(p.get_text().split()) for p in page.select('.audit-sentence')]
    assert sentence == ('alice had their database password changed inside a workspace; '
                        'Penstock put it back')
    details = {dt.get_text(): dt.find_next_sibling('dd').get_text()
               for dt in page.select('li[data-record] details dt')}
    assert details == {'Database role': 'alice', 'Workspaces on that server': '1'}
    option = page.find('option', value='user.password.drift')
    assert option.get_text() == 'Database password put back (user.password.drift)'
    assert check()[0].repaired == [], 'nothing to put back any more'
    assert len(emails('user.password.drift', logged_in)) == 1


def test_a_drifted_workspace_shows_pending_until_its_password_is_put_back(
        app, user, monkeypatch, workspace_server, opened):
    [analytics] = provision(user, 'analytics')
    run_jobs()
    attacker = take_over(opened, shown(analytics))
    server = next(iter(models.Config.workspace_servers))

    def cannot(connection, desired):
        raise psycopg.OperationalError('the server went away mid-repair')
    monkeypatch.setattr(server, 'converge', cannot)
    [report] = check()
    assert report.repaired == [user.id]
    assert states(user) == {'analytics': 'pending'}, 'not put back yet: not Applied'
    assert not is_ended(attacker)
    with database.db.connection_context():
        [job] = PropagationJob.select().where(PropagationJob.status == 'pending')
    assert (job.reason, job.end_connections) == ('user.password.drift', True)

    monkeypatch.undo()
    assert run_jobs() == 1, 'a worker finishes the repair'
    assert states(user) == {'analytics': 'applied'}
    assert is_ended(attacker)
    assert who(shown(analytics)) == ('alice', analytics.database_name)


def test_applied_means_the_servers_verifier_is_the_one_penstock_set(
        app, user, workspace_server):
    [analytics] = provision(user, 'analytics')
    run_jobs()
    with database.db.connection_context():
        [kept] = RoleVerifier.select()
    assert (kept.user_id, kept.role, kept.version) == (user.id, 'alice', 1)
    assert kept.verifier == verifier_on_server(workspace_server)
    assert kept.verifier.startswith('SCRAM-SHA-256$') and password_of(user) not in kept.verifier

    # The same password under another salt is another text: not what Penstock set.
    with connect(workspace_server.url) as admin:
        other = admin.pgconn.encrypt_password(password_of(user).encode(), b'alice',
                                              b'scram-sha-256').decode()
        admin.execute(f"ALTER ROLE alice PASSWORD '{other}'")
    assert check()[0].repaired == [user.id]
    with database.db.connection_context():
        assert RoleVerifier.get().verifier == verifier_on_server(workspace_server) != other


def test_a_role_with_no_verifier_on_record_gets_one_through_a_job_without_alarm(
        app, user, workspace_server):
    [analytics] = provision(user, 'analytics')
    run_jobs()
    with database.db.connection_context():
        RoleVerifier.delete().execute()  # as migration 0008 leaves roles made before it
    [report] = check()
    assert (report.queued, report.repaired) == ([user.id], [])
    with database.db.connection_context():
        assert [job.reason for job in PropagationJob.select().where(
            PropagationJob.status == 'pending')] == ['workspaces.check']
    assert emails('user.password.drift', user) == []
    assert run_jobs() == 1
    with database.db.connection_context():
        assert RoleVerifier.get().verifier == verifier_on_server(workspace_server)
    assert who(shown(analytics)) == ('alice', analytics.database_name)


@pytest.mark.parametrize('verifiers', [True, False], ids=['reads-verifiers', 'no-verifiers'])
def test_an_admin_that_is_no_superuser_puts_back_only_what_it_can_read(
        app, user, limited_admin, workspace_server, opened, verifiers):
    servers = limited_admin(verifiers)
    [analytics] = provision(user, 'analytics')
    run_jobs(servers)
    attacker = take_over(opened, shown(analytics))
    [report] = check(servers=servers)
    assert report.verifiers_readable is verifiers
    assert report.repaired == ([user.id] if verifiers else [])
    assert is_ended(attacker) is verifiers
    if not verifiers:  # as before: every converge sets the password, so a rotation does
        with database.db.connection_context():
            DatabasePassword.rotate(models.User.get_by_id(user.id))
        run_jobs(servers)
    assert who(shown(analytics)) == ('alice', analytics.database_name)


def test_one_worker_at_a_time_checks_a_server_and_only_when_it_is_due(app):
    hour = datetime.timedelta(hours=1)
    with database.db.connection_context():
        assert ServerCheck.claim('db1:5432', LEASE, hour)
        assert not ServerCheck.claim('db1:5432', LEASE, DUE), 'held by the first worker'
        assert ServerCheck.claim('db2:5432', LEASE, hour), 'another server is free'
        ServerCheck.done('db1:5432')
        assert not ServerCheck.claim('db1:5432', LEASE, hour), 'checked just now'
        assert ServerCheck.claim('db1:5432', LEASE, DUE)


def test_the_worker_thread_puts_a_password_back_on_its_own(app, user, workspace_server, opened):
    [analytics] = provision(user, 'analytics')
    run_jobs()
    attacker = take_over(opened, shown(analytics))
    stop = threading.Event()
    app.config['WORKSPACE_CHECK_INTERVAL'] = 0.1
    watch.start_thread(app.config, stop)
    try:
        deadline = time.monotonic() + 30
        while not is_ended(attacker) and time.monotonic() < deadline:
            stop.wait(0.05)
    finally:
        stop.set()
    assert is_ended(attacker)
    assert who(shown(analytics)) == ('alice', analytics.database_name)
    assert len(emails('user.password.drift', user)) == 1


# Reset authentication and Rotate Password

def test_reset_authentication_ends_open_connections_and_the_old_password(
        client, logged_in, workspace_server, opened):
    analytics = create(client, 'analytics')
    run_jobs()
    old = copied(client, analytics)
    connection = opened(old)
    page = html(client.get(ADVANCED + '/reset-authentication'))
    question = page.find(id='reset-authentication-question').get_text()
    assert 'Your Database Password is rotated and every open connection to your workspaces ' \
           'is ended.' in ' '.join(question.split())
    response = client.post(ADVANCED + '/reset-authentication',
                           data={'csrf_token': csrf_token(client, ADVANCED)})
    assert response.status_code == 303
    assert states(logged_in) == {'analytics': 'pending'}
    with database.db.connection_context():
        [job] = PropagationJob.select().where(PropagationJob.status == 'pending')
    assert job.end_connections

    assert run_jobs() == 1
    assert is_ended(connection)
    assert WRONG_PASSWORD in refusal(old)
    assert who(shown(analytics)) == ('alice', analytics.database_name)
    [email] = emails('user.authentication.reset', logged_in)
    assert 'Your database password was rotated too (version 2)' in mail.render(email)[1]
    assert emails('user.password.rotate', logged_in) == [], 'one email says it all'


@pytest.mark.parametrize('ticked', [True, False], ids=['ticked', 'unticked'])
def test_rotate_password_ends_open_connections_only_when_ticked(
        client, logged_in, workspace_server, opened, ticked):
    analytics = create(client, 'analytics')
    run_jobs()
    connection = opened(copied(client, analytics))
    confirm = html(client.get(PROFILE + '/password/rotate', headers=HTMX))
    box = confirm.find('input', type='checkbox', attrs={'name': 'end_connections'})
    assert box.find_parent('label').get_text(strip=True) == 'Also end open connections'
    assert not box.has_attr('checked'), 'off by default'
    assert 'not terminated, unless you tick Also end open connections' in confirm.get_text()
    form = {'csrf_token': csrf_token(client, PROFILE)}
    if ticked:
        form['end_connections'] = box['value']
    response = client.post(PROFILE + '/password/rotate', data=form)
    assert response.status_code == 303
    run_jobs()
    assert states(logged_in) == {'analytics': 'applied'}
    assert is_ended(connection) is ticked
    with database.db.connection_context():
        [record] = audit('user.password.rotate')
        assert ('end_connections' in record.data) is ticked


def test_the_api_rotation_ends_open_connections_when_asked(client, logged_in, api, opened):
    analytics = create(client, 'analytics')
    run_jobs()
    connection = opened(copied(client, analytics))
    refused = api('POST', '/api/v0/user/alice/password', {'end_connections': 'yes'})
    assert refused.status_code == 400
    assert refused.get_json()['validation_errors'] == [
        {'location': 'body.end_connections', 'message': 'must be true or false'}]
    assert not is_ended(connection)
    answer = api('POST', '/api/v0/user/alice/password', {'end_connections': True})
    assert answer.status_code == 201
    run_jobs()
    assert is_ended(connection)
    assert who(shown(analytics)) == ('alice', analytics.database_name)


def test_the_sixth_rotation_in_an_hour_is_429_on_the_page_and_the_api_alike(
        client, logged_in, api):
    page = html(client.get(PROFILE))
    assert 'At most 5 an hour.' in page.find(id='rotate-limit').get_text()
    for _ in range(6):  # refused before counting: they rotate nothing
        assert api('POST', '/api/v0/user/alice/password',
                   {'end_connections': 'yes'}).status_code == 400
    for _ in range(3):
        assert client.post(PROFILE + '/password/rotate', data={
            'csrf_token': csrf_token(client, PROFILE)}).status_code == 303
    for _ in range(2):
        assert api('POST', '/api/v0/user/alice/password').status_code == 201

    refused = api('POST', '/api/v0/user/alice/password')
    assert refused.status_code == 429 and int(refused.headers['Retry-After']) > 0
    malformed = api('POST', '/api/v0/user/alice/password', {'end_connections': 1})
    assert malformed.status_code == 400, 'a malformed request is told so, limit or not'
    problem = refused.get_json()
    assert problem['detail'] == ('You can rotate your database password at most 5 an hour. '
                                 'Try again later; nothing was changed.')
    for headers in ({}, HTMX):
        response = client.post(PROFILE + '/password/rotate', headers=headers,
                               data={'csrf_token': csrf_token(client, PROFILE)})
        assert response.status_code == 429
        said = html(response).find(id='rotate-error')
        assert said['role'] == 'alert' and said.get_text() == problem['detail']
        assert html(response).find('button', string='Rotate Password')
    with database.db.connection_context():
        assert len(audit('user.password.rotate')) == 5
    assert len(emails('user.password.rotate', logged_in)) == 5


def test_twenty_simultaneous_rotations_rotate_five_times(server, alice, token):
    """The finding's flood: 20 rotations at once through a real HTTP server; five go through
    (five System emails), fifteen are told to wait."""
    def rotate(_):
        request = urllib.request.Request(f'{server}/api/v0/user/alice/password', method='POST',
                                         headers={'Authorization': f'Bearer {token[1]}'})
        start.wait()
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status
        except urllib.error.HTTPError as refused:
            return refused.code
    start = threading.Barrier(20, timeout=30)
    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = sorted(pool.map(rotate, range(20)))
    assert statuses == [201] * 5 + [429] * 15
    assert len(emails('user.password.rotate', alice)) == 5
    assert password_version(alice) == 6


# Transactions left idle

def test_transactions_left_idle_are_ended_but_not_the_admins_or_busy_ones(
        app, user, workspace_server, opened):
    [analytics] = provision(user, 'analytics')
    run_jobs()
    idle = opened(shown(analytics))
    idle.execute('SET idle_in_transaction_session_timeout = 0')  # what a tenant may do
    idle.autocommit = False
    idle.execute('SELECT 1')  # a transaction is open, and left
    resting = opened(shown(analytics))  # connected, no transaction
    admin = opened(workspace_server.url)
    admin.autocommit = False
    admin.execute('SELECT 1')

    assert check(idle_timeout=3600)[0].idle_ended == [], 'not idle long enough'
    [report] = check(idle_timeout=0)
    assert [role for role, _ in report.idle_ended] == ['alice']
    assert is_ended(idle)
    assert not is_ended(resting)
    assert not is_ended(admin)
    admin.rollback()
