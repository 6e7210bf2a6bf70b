"""The embedded workspace server (embedded.py): real PostgreSQL servers started in temporary
directories, reached the way a workspace's connection string reaches them."""
import os
import pwd
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from embedded import SERVER_USER, EmbeddedPostgres

DEBIAN_BIN = Path('/usr/lib/postgresql/15/bin')
ROOT_DIRECTORY = Path(__file__).resolve().parents[1]
ROOT = os.geteuid() == 0


@pytest.fixture(autouse=True)
def _stop_what_a_test_left(tmp_path):
    """A failing test must not leave its server running."""
    yield
    EmbeddedPostgres(tmp_path).stop()


@pytest.fixture(scope='module')
def postgres(tmp_path_factory):
    """One throwaway server for the checks that only look at it."""
    with EmbeddedPostgres(tmp_path_factory.mktemp('pg'), durable=False) as server:
        yield server


def query(url, sql, *parameters, **connect):
    with psycopg.connect(url, connect_timeout=5, **connect) as connection:
        cursor = connection.execute(sql, parameters)
        return cursor.fetchall() if cursor.description else None


def admin_password(server):
    return (server.directory / 'admin-password').read_text().strip()


def outward_address():
    """This machine's address on its default route, or None without one (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(('192.0.2.1', 9))
        except OSError:
            return None
        return probe.getsockname()[0]


def test_the_admin_url_connects_over_tcp_as_the_penstock_superuser(postgres):
    assert postgres.url == (f'postgresql://penstock:{admin_password(postgres)}'
                            f'@127.0.0.1:{postgres.port}/postgres')
    assert query(postgres.url, 'SELECT current_user, inet_server_addr()::text, '
                 'inet_server_port(), rolsuper FROM pg_roles WHERE rolname = current_user') == [
        ('penstock', '127.0.0.1/32', postgres.port, True)]
    assert (postgres.address, postgres.running) == ('127.0.0.1', True)


def test_a_wrong_or_missing_password_is_refused(postgres):
    password = admin_password(postgres)
    with pytest.raises(psycopg.OperationalError, match='password authentication failed'):
        query(postgres.url.replace(password, password[::-1]), 'SELECT 1')
    with pytest.raises(psycopg.OperationalError):
        query(postgres.url.replace(f':{password}@', '@'), 'SELECT 1', password='')


def test_it_listens_on_127_0_0_1_only_and_asks_every_connection_for_a_scram_password(postgres):
    assert query(postgres.url, 'SHOW listen_addresses') == [('127.0.0.1',)]
    assert query(postgres.url, 'SELECT type, database, user_name, address, auth_method '
                 'FROM pg_hba_file_rules') == [
        ('host', ['all'], ['all'], '127.0.0.1', 'scram-sha-256')]
    for address in ['127.0.0.2', '::1', outward_address()]:
        if address is not None:
            with pytest.raises(psycopg.OperationalError):
                query(postgres.url, 'SELECT 1', host=address)


def test_there_is_no_unix_socket_at_all(postgres):
    """TCP on loopback is the one way in (a socket's path also has a length limit that a
    deep instance directory would pass)."""
    assert query(postgres.url, 'SHOW unix_socket_directories') == [('',)]
    assert not list(postgres.directory.rglob('.s.PGSQL.*'))


def test_the_admin_password_is_in_a_private_file_and_nowhere_else(postgres):
    password_file = postgres.directory / 'admin-password'
    password = admin_password(postgres)
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    assert password_file.stat().st_uid == os.geteuid()
    pid = int((postgres.directory / 'data' / 'postmaster.pid').read_text().split()[0])
    for text in [(postgres.directory / 'server.log').read_text(),
                 (postgres.directory / 'data' / 'postmaster.opts').read_text(),
                 Path(f'/proc/{pid}/cmdline').read_text()]:
        assert password not in text
    assert [path.name for path in postgres.directory.iterdir() if path.name.startswith('tmp')] == []


def test_a_failed_statement_that_carries_a_password_is_not_written_to_the_server_log(postgres):
    with pytest.raises(psycopg.errors.UndefinedObject):
        query(postgres.url, "ALTER ROLE \"nobody\" PASSWORD 'leaky-secret-123'")
    log = (postgres.directory / 'server.log').read_text()
    assert 'role "nobody" does not exist' in log
    assert 'leaky-secret-123' not in log


def test_a_throwaway_server_skips_flushes_and_a_durable_one_keeps_them(postgres, tmp_path):
    assert query(postgres.url, 'SHOW fsync') == [('off',)]
    with EmbeddedPostgres(tmp_path) as durable:
        assert query(durable.url, 'SELECT current_setting(%s), current_setting(%s)',
                     'fsync', 'synchronous_commit') == [('on', 'on')]
        assert query(durable.url, 'SELECT pg_encoding_to_char(encoding) FROM pg_database '
                     'WHERE datname = current_database()') == [('UTF8',)]


def test_a_restart_keeps_the_data_the_password_and_the_port(tmp_path):
    server = EmbeddedPostgres(tmp_path, durable=False).start()
    url = server.url
    query(url, 'CREATE TABLE kept (x int); INSERT INTO kept VALUES (7)')
    server.stop()
    assert not server.running
    with EmbeddedPostgres(tmp_path, durable=False) as again:
        assert again.url == url
        assert query(url, 'SELECT x FROM kept') == [(7,)]


def test_a_taken_port_moves_the_server_to_a_free_one_which_is_then_kept(tmp_path, caplog):
    server = EmbeddedPostgres(tmp_path, durable=False).start()
    first = server.port
    server.stop()
    with socket.socket() as squatter:
        squatter.bind(('127.0.0.1', first))
        squatter.listen()
        server.start()
        moved = server.port
        assert moved != first
        assert query(server.url, 'SELECT inet_server_port()') == [(moved,)]
        assert f'port {first} is taken' in caplog.text
        server.stop()
    with EmbeddedPostgres(tmp_path, durable=False) as again:
        assert again.port == moved


def test_a_server_left_running_on_the_directory_is_replaced_by_the_new_start(tmp_path):
    left = EmbeddedPostgres(tmp_path, durable=False).start()
    query(left.url, 'CREATE TABLE kept (x int)')
    old_start = query(left.url, 'SELECT pg_postmaster_start_time()')
    with EmbeddedPostgres(tmp_path, durable=False) as new:
        assert new.url == left.url
        assert query(new.url, 'SELECT count(*) FROM kept') == [(0,)]
        assert query(new.url, 'SELECT pg_postmaster_start_time()') != old_start
        assert len(postmasters(tmp_path / 'data')) == 1
    assert not left.running


def test_a_server_killed_with_9_starts_again_with_its_data(tmp_path):
    server = EmbeddedPostgres(tmp_path).start()
    query(server.url, 'CREATE TABLE kept (x int)')
    os.kill(int(postmasters(tmp_path / 'data')[0]), signal.SIGKILL)
    with EmbeddedPostgres(tmp_path) as again:
        assert query(again.url, 'SELECT count(*) FROM kept') == [(0,)]


def test_two_processes_starting_one_new_directory_take_turns(tmp_path):
    start = ('import sys; from embedded import EmbeddedPostgres; '
             'EmbeddedPostgres(sys.argv[1], durable=False).start()')
    starters = [subprocess.Popen([sys.executable, '-c', start, tmp_path], cwd=ROOT_DIRECTORY)
                for _ in range(2)]
    assert [starter.wait(timeout=60) for starter in starters] == [0, 0]
    assert len(postmasters(tmp_path / 'data')) == 1
    with EmbeddedPostgres(tmp_path, durable=False) as server:
        assert query(server.url, 'SELECT 1') == [(1,)]


def postmasters(data):
    """The processes working in `data` whose parent does not: the postmasters serving it."""
    parents = {}
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            if os.readlink(f'/proc/{pid}/cwd') == str(data.resolve()):
                stat = Path(f'/proc/{pid}/stat').read_text()
                parents[pid] = stat.rsplit(')', 1)[1].split()[1]
        except OSError:  # gone (a backend that just ended), or a zombie
            pass
    return [pid for pid, parent in parents.items() if parent not in parents]


def test_stop_is_idempotent_and_safe_before_any_start(tmp_path):
    EmbeddedPostgres(tmp_path / 'never').stop()
    assert not (tmp_path / 'never').exists()
    server = EmbeddedPostgres(tmp_path, durable=False).start()
    server.stop()
    server.stop()
    assert not server.running
    with pytest.raises(psycopg.OperationalError):
        query(server.url, 'SELECT 1')


def test_a_first_start_killed_halfway_leaves_nothing_in_the_way(tmp_path):
    (tmp_path / 'data-initializing').mkdir()
    (tmp_path / 'data-initializing' / 'PG_VERSION').write_text('18\n')
    with EmbeddedPostgres(tmp_path, durable=False) as server:
        assert query(server.url, 'SELECT 1') == [(1,)]
    assert not (tmp_path / 'data-initializing').exists()


@pytest.mark.skipif(not ROOT, reason='only root hands the server to another user')
def test_as_root_the_server_runs_as_its_own_system_user(postgres):
    account = pwd.getpwnam(SERVER_USER)
    pid = (postgres.directory / 'data' / 'postmaster.pid').read_text().split()[0]
    uids = next(line for line in Path(f'/proc/{pid}/status').read_text().splitlines()
                if line.startswith('Uid:')).split()[1:]
    assert set(map(int, uids)) == {account.pw_uid}
    assert (postgres.directory / 'data').stat().st_uid == account.pw_uid
    assert (postgres.directory / 'admin-password').stat().st_uid == 0
    assert account.pw_shell == '/usr/sbin/nologin'


@pytest.mark.skipif(not DEBIAN_BIN.is_dir(), reason=f'{DEBIAN_BIN} is not installed')
def test_workspace_postgres_bin_runs_other_binaries(tmp_path, monkeypatch):
    monkeypatch.setenv('WORKSPACE_POSTGRES_BIN', str(DEBIAN_BIN))
    with EmbeddedPostgres(tmp_path, durable=False) as server:
        assert query(server.url, 'SHOW server_version_num')[0][0].startswith('15')
        assert query(server.url, 'SELECT count(*) FROM pg_hba_file_rules') == [(1,)]
