"""The PostgreSQL servers that hold workspaces, and how one is brought to match the metadata.

Each server is reached through an admin URL (WORKSPACE_DATABASE_URL, comma-separated; unset,
the embedded server of embedded.py under instance/). A user's workspaces on a server are
databases reached by one login role named after the user's handle, whose password is the
user's Database Password. What the server holds for a user is found by comments, not names:
the role carries `penstock user <user id>` and each database `penstock user <user id>
workspace <workspace id>`, so a renamed handle or a deleted workspace row still leads to
what must be renamed or dropped.

`Server.converge` makes a server hold exactly what the metadata says of one user: it drops
the databases no workspace names any more (and the role with the last one, with whatever
other tenants granted it), creates the role and the missing databases, renames the role
after a handle change, sets its password, and restates the server's limits (Limits). It
runs under an advisory lock of that user on that server, taken before the metadata is read,
so two workers never interleave and the later one always applies the newer state. The
password travels as a SCRAM verifier made here (never in plain text in a statement, a server
log or pg_stat_activity)."""
import base64
import contextlib
import hashlib
import hmac
import socket
import logging
import re
import threading
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5  # seconds: a server that is down leaves jobs pending, retried later
LOCK_NAMESPACE = 0x5057  # the first key of every advisory lock taken here ("PW")
# A workspace role's attributes as Found reads them: the value each must have (it reaches its
# own databases and nothing else), and the clause of CREATE/ALTER ROLE that sets it. Its
# connection limit is the server's (Limits), set and compared apart.
ROLE_CLAUSES = {
    'superuser': (False, 'NOSUPERUSER'), 'createdb': (False, 'NOCREATEDB'),
    'createrole': (False, 'NOCREATEROLE'), 'replication': (False, 'NOREPLICATION'),
    'bypassrls': (False, 'NOBYPASSRLS'), 'login': (True, 'LOGIN'),
    'expires': (None, "VALID UNTIL 'infinity'"),
}
ROLE_ATTRIBUTES = ' '.join(clause for _, clause in ROLE_CLAUSES.values())
# Databases of the server itself that no workspace role may connect to.
SERVER_DATABASES = ('postgres', 'template1')


def role_mark(user_id):
    return f'penstock user {user_id}'


def database_mark(user_id, workspace_id):
    return f'{role_mark(user_id)} workspace {workspace_id}'


# PostgreSQL's units of a memory setting such as temp_file_limit, in kB.
MEMORY_UNITS = {'kB': 1, 'MB': 1024, 'GB': 1024 ** 2, 'TB': 1024 ** 3}


@dataclass(frozen=True)
class Limits:
    """What one tenant may take of a shared server (docs/operations.md): `connections` at
    once for each role and for each database (WORKSPACE_CONNECTION_LIMIT), and
    `temp_file_kb` of temporary files per session of a role (WORKSPACE_TEMP_FILE_LIMIT;
    temp_file_limit is a superuser-only setting, so a tenant cannot lift it)."""
    connections: int = 20
    temp_file_kb: int = 1024 ** 2

    @classmethod
    def parse(cls, connections, temp_files):
        """Limits from the settings' text (a count; a size such as 1GB, or -1 for none), or a
        ValueError that names the setting."""
        try:
            count = int(connections)
        except ValueError:
            count = 0
        if count < 1:
            raise ValueError(f'WORKSPACE_CONNECTION_LIMIT is {connections!r}: use a whole number '
                             'of connections, 1 or more')
        match = re.fullmatch(r'\s*(-1|\d+)\s*(kB|MB|GB|TB)?\s*', str(temp_files))
        if not match or (match[1] == '-1' and match[2]):
            raise ValueError(f'WORKSPACE_TEMP_FILE_LIMIT is {temp_files!r}: use a size such as '
                             '512MB or 1GB (units kB, MB, GB, TB), or -1 for no limit')
        size = int(match[1]) * MEMORY_UNITS[match[2] or 'kB']
        if size > 2 ** 31 - 1:  # temp_file_limit is an int of kB
            raise ValueError(f'WORKSPACE_TEMP_FILE_LIMIT is {temp_files!r}: at most 2047GB')
        return cls(count, size)

    @property
    def temp_files(self):
        """The temporary file limit in PostgreSQL's words (1GB, 512MB), or None: none."""
        if self.temp_file_kb < 0:
            return None
        unit = next((unit for unit in ('TB', 'GB', 'MB') if self.temp_file_kb
                     and self.temp_file_kb % MEMORY_UNITS[unit] == 0), 'kB')
        return f'{self.temp_file_kb // MEMORY_UNITS[unit]}{unit}'


class Drift(Exception):
    """The server holds something in the way that this code will not touch by itself (a
    role of the wanted name that is not this user's); the job is retried later."""


@dataclass
class Desired:
    """What a server should hold for one user, read from the metadata: the role's name (the
    handle; None once the account is gone), the password and its version, and the user's
    databases on this server by workspace id. `verifier` is the SCRAM verifier Penstock set
    there for this version, when it has one on record; a converge that sets another puts
    that one here."""
    user_id: str
    role: str | None = None
    password: str | None = None
    version: int = 0
    databases: dict = field(default_factory=dict)
    server: str | None = None
    verifier: str | None = None


@dataclass
class Found:
    """What a server holds for one user: the role's name (None: no role), its SCRAM verifier
    (unless `verifier_readable` is False: an admin that may not read pg_authid) and
    attributes, and the user's databases by name (each with its workspace id) and the roles
    that may connect to each. The limits: the role's connection limit and temp_file_limit (in
    kB as the server keeps it, None: not set), each database's connection limit; and the other
    databases where the role owns objects or holds privileges ('' for shared objects)."""
    role: str | None = None
    verifier: str | None = None
    verifier_readable: bool = True
    attributes: dict = field(default_factory=dict)
    databases: dict = field(default_factory=dict)
    connectable: dict = field(default_factory=dict)
    connection_limit: int | None = None
    temp_file_limit: str | None = None
    database_limits: dict = field(default_factory=dict)
    holdings: set = field(default_factory=set)


def scram_verifier_matches(verifier, password):
    """Whether `verifier` (pg_authid.rolpassword, SCRAM-SHA-256$iter:salt$stored:server) was
    made from `password` (RFC 5802/7677: StoredKey = H(HMAC(SaltedPassword, "Client Key")))."""
    try:
        method, rest = verifier.split('$', 1)
        parameters, keys = rest.split('$', 1)
        iterations, salt = parameters.split(':', 1)
        stored_key = keys.split(':', 1)[0]
        if method != 'SCRAM-SHA-256':
            return False
        salted = hashlib.pbkdf2_hmac('sha256', password.encode(), base64.b64decode(salt),
                                     int(iterations))
    except (AttributeError, ValueError):
        return False
    client_key = hmac.new(salted, b'Client Key', hashlib.sha256).digest()
    return hmac.compare_digest(hashlib.sha256(client_key).digest(),
                               base64.b64decode(stored_key))


class Server:
    """A PostgreSQL server that holds workspaces, administered through `url` (a superuser, or
    a role with CREATEROLE and CREATEDB). `key` names it in the metadata (workspace.server):
    the URL's host:port unless given."""

    def __init__(self, url, key=None, limits=None):
        parts = urlsplit(url)
        self.limits = limits or Limits()
        self.url = url
        self.host = parts.hostname or '127.0.0.1'
        self.port = parts.port or 5432
        self.admin = unquote(parts.username or '')
        self.key = key or f'{self.host}:{self.port}'
        self._address = None
        self._prepared = False
        self._prepare_lock = threading.Lock()
        self._roles = 'pg_authid'

    def __repr__(self):
        return f'<Server {self.key}>'  # never the URL: it holds the admin password

    @property
    def address(self):
        """The server's IP address, for a connection string's hostaddr= (libpq connects
        there and keeps the workspace's DNS name as host)."""
        if self._address is None:
            info = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
            self._address = info[0][4][0]
        return self._address

    def connect(self, database=None):
        """An autocommit admin connection, to `database` or the URL's own."""
        options = {'dbname': database} if database else {}
        return psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT,
                               application_name='penstock', **options)

    running = True  # as far as Penstock knows: it neither starts nor stops this one

    def start(self):
        """Nothing to start: the server runs by itself (EmbeddedServer starts its own)."""

    def stop(self):
        """Nothing to stop (see start)."""

    def _prepare(self, connection):
        """Once per process: no role but the admin may connect to the server's own databases
        (a new database is closed to PUBLIC when it is made, see _create_database). An admin
        that is not a superuser cannot read password verifiers: then every converge sets the
        password, whether or not it is current."""
        with self._prepare_lock:
            if self._prepared:
                return
            readable = connection.execute(
                "SELECT has_table_privilege('pg_authid', 'SELECT')").fetchone()[0]
            self._roles = 'pg_authid' if readable else 'pg_roles'
            for name in SERVER_DATABASES:
                try:
                    connection.execute(sql.SQL('REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM '
                                               'PUBLIC').format(sql.Identifier(name)))
                except psycopg.errors.InsufficientPrivilege:
                    log.warning('The admin of workspace server %s may not close database %s '
                                'to PUBLIC: do it as a superuser (docs/operations.md).',
                                self.key, name)
            self._prepared = True

    @contextlib.contextmanager
    def holding(self, user_id):
        """An admin connection holding the advisory lock of `user_id` on this server: one
        converge at a time per user and server, however many workers there are."""
        with self.connect() as connection:
            connection.execute('SELECT pg_advisory_lock(%s, hashtext(%s))',
                               (LOCK_NAMESPACE, user_id))
            yield connection  # closing the connection releases the lock

    def found(self, connection, user_id):
        """What this server holds for `user_id`."""
        self._prepare(connection)
        found = Found()
        row = connection.execute(
            "SELECT r.rolname, r.rolpassword, r.rolsuper, r.rolcreatedb, r.rolcreaterole, "
            "r.rolreplication, r.rolbypassrls, r.rolcanlogin, "
            "CASE WHEN r.rolvaliduntil = 'infinity' THEN NULL ELSE r.rolvaliduntil END, "
            "r.rolconnlimit, (SELECT substr(c, length('temp_file_limit=') + 1) "
            "FROM pg_db_role_setting s, unnest(s.setconfig) c WHERE s.setrole = r.oid "
            "AND s.setdatabase = 0 AND c LIKE 'temp\\_file\\_limit=%%'), "
            "ARRAY(SELECT DISTINCT coalesce(d.datname, '') FROM pg_shdepend h "
            "LEFT JOIN pg_database d ON d.oid = h.dbid WHERE h.refobjid = r.oid "
            "AND h.refclassid = 'pg_authid'::regclass) "
            f"FROM {self._roles} r "
            "JOIN pg_shdescription d ON d.objoid = r.oid AND d.classoid = 'pg_authid'::regclass "
            "WHERE d.description = %s", (role_mark(user_id),)).fetchone()
        if row:
            # pg_roles shows every password as ********: then it is not known to be current.
            found.role = row[0]
            found.verifier = row[1] if self._roles == 'pg_authid' else None
            found.verifier_readable = self._roles == 'pg_authid'
            found.attributes = dict(zip(ROLE_CLAUSES, row[2:9]))
            found.connection_limit, found.temp_file_limit = row[9], row[10]
            found.holdings = set(row[11])
        prefix = role_mark(user_id) + ' workspace '
        for name, description, acl, limit in connection.execute(
                "SELECT d.datname, s.description, d.datacl::text[], d.datconnlimit "
                "FROM pg_database d JOIN pg_shdescription s ON s.objoid = d.oid "
                "AND s.classoid = 'pg_database'::regclass WHERE s.description LIKE %s",
                (prefix.replace('_', r'\_') + '%',)):
            found.databases[name] = description.removeprefix(prefix)
            found.connectable[name] = _connecting_roles(acl or [])
            found.database_limits[name] = limit
        found.holdings -= set(found.databases)  # its own databases hold what it made there
        return found

    def converge(self, connection, desired):
        """Make this server hold `desired` and nothing else of that user (see the module's
        docstring). `connection` is holding()'s. Idempotent: after a crash anywhere in it,
        running it again finishes the job."""
        found = self.found(connection, desired.user_id)
        wanted = {} if desired.role is None else desired.databases
        for name in set(found.databases) - set(wanted.values()):
            # The one place where terminating connections is right: the database goes.
            connection.execute(sql.SQL('DROP DATABASE IF EXISTS {} WITH (FORCE)')
                               .format(sql.Identifier(name)))
        if not wanted:
            if found.role is not None:
                self._drop_role(connection, found.role)
            return
        role = sql.Identifier(desired.role)
        if found.role is None:
            self._create_role(connection, desired)
        else:
            if found.role != desired.role:
                self._check_free(connection, desired.role)
                connection.execute(sql.SQL('ALTER ROLE {} RENAME TO {}').format(
                    sql.Identifier(found.role), role))
            if found.verifier is None or found.verifier != desired.verifier:
                self._set_password(connection, desired)
            wrong = [ROLE_CLAUSES[name][1] for name, value in found.attributes.items()
                     if value != ROLE_CLAUSES[name][0]]
            if wrong:  # only those: an admin that is no superuser may not restate SUPERUSER
                connection.execute(sql.SQL('ALTER ROLE {} ' + ' '.join(wrong)).format(role))
        for workspace_id, name in wanted.items():
            if name not in found.databases:
                self._create_database(connection, desired, workspace_id, name)
                continue
            # An ACL names roles by oid: a role renamed above is listed by its new name now.
            connecting = {desired.role if each == found.role else each
                          for each in found.connectable[name]}
            if connecting - {self.admin} != {desired.role}:
                self._open_to(connection, name, desired.role, connecting)
        self._limit(connection, desired, found)

    @staticmethod
    def _verifier(connection, desired):
        """A SCRAM-SHA-256 verifier of the password, made by libpq on this side: the server
        (its statement log, pg_stat_activity) only ever sees the verifier. It is kept in
        `desired.verifier`, for the record of what this server holds (RoleVerifier)."""
        desired.verifier = connection.pgconn.encrypt_password(
            desired.password.encode(), desired.role.encode(), b'scram-sha-256').decode()
        return desired.verifier

    def _set_password(self, connection, desired):
        """A new verifier of the desired password on the role: the one on record is not the
        server's (a rotation, a password set from inside, or none on record yet)."""
        connection.execute(sql.SQL('ALTER ROLE {} PASSWORD {}').format(
            sql.Identifier(desired.role), sql.Literal(self._verifier(connection, desired))))

    def role_verifiers(self, connection):
        """{user id: (role, SCRAM verifier)} of every Penstock role on this server, in one
        catalog query; None when the admin may not read verifiers (pg_authid)."""
        self._prepare(connection)
        if self._roles != 'pg_authid':
            return None
        rows = connection.execute(
            "SELECT d.description, r.rolname, r.rolpassword FROM pg_authid r "
            "JOIN pg_shdescription d ON d.objoid = r.oid AND d.classoid = 'pg_authid'::regclass "
            "WHERE d.description LIKE 'penstock user %' AND d.description NOT LIKE '% workspace %'")
        return {description.split()[2]: (name, verifier) for description, name, verifier in rows}

    @staticmethod
    def end_connections(connection, role):
        """End every open connection of `role` (pg_terminate_backend); how many there were."""
        return sum(ended for (ended,) in connection.execute(
            'SELECT pg_terminate_backend(pid) FROM pg_stat_activity '
            'WHERE usename = %s AND pid <> pg_backend_pid()', (role,)))

    @staticmethod
    def end_idle_transactions(connection, timeout):
        """End the backends of Penstock roles whose transaction has sat idle longer than
        `timeout` seconds (a tenant may lift idle_in_transaction_session_timeout for
        themselves); never the admin's own. Returns [(role, pid)] of those ended."""
        # MATERIALIZED: the backends are chosen first, and only those are ended.
        return connection.execute(
            "WITH idle AS MATERIALIZED (SELECT a.usename, a.pid FROM pg_stat_activity a "
            "JOIN pg_shdescription d ON d.objoid = a.usesysid "
            "AND d.classoid = 'pg_authid'::regclass "
            "WHERE d.description LIKE 'penstock user %%' "
            "AND a.state IN ('idle in transaction', 'idle in transaction (aborted)') "
            "AND a.state_change < now() - make_interval(secs => %s) "
            "AND a.usename <> current_user AND a.pid <> pg_backend_pid()) "
            "SELECT usename, pid FROM idle WHERE pg_terminate_backend(pid)",
            (float(timeout),)).fetchall()

    @staticmethod
    def _check_free(connection, name):
        if connection.execute('SELECT 1 FROM pg_roles WHERE rolname = %s', (name,)).fetchone():
            raise Drift(f'a role named {name} exists on the server and is not this user\'s')

    def _create_role(self, connection, desired):
        self._check_free(connection, desired.role)
        role = sql.Identifier(desired.role)
        with connection.transaction():  # the role and its mark, or neither
            connection.execute(sql.SQL('CREATE ROLE {} ' + ROLE_ATTRIBUTES
                                       + ' CONNECTION LIMIT {} PASSWORD {}').format(
                role, sql.Literal(self.limits.connections),
                sql.Literal(self._verifier(connection, desired))))
            connection.execute(sql.SQL('ALTER ROLE {} SET temp_file_limit = {}').format(
                role, sql.Literal(self.limits.temp_file_kb)))
            connection.execute(sql.SQL('COMMENT ON ROLE {} IS {}').format(
                role, sql.Literal(role_mark(desired.user_id))))

    def _create_database(self, connection, desired, workspace_id, name):
        """The workspace's database: owned by the admin, CONNECT for the user's role alone,
        its `public` schema the role's. CREATE DATABASE cannot run in a transaction, so a
        crash can leave one unmarked: the next run finds it by name and goes on."""
        database, role = sql.Identifier(name), sql.Identifier(desired.role)
        try:
            connection.execute(sql.SQL('CREATE DATABASE {}').format(database))
        except psycopg.errors.DuplicateDatabase:
            mark = connection.execute(
                "SELECT shobj_description(oid, 'pg_database') FROM pg_database "
                "WHERE datname = %s", (name,)).fetchone()
            if mark and mark[0] is not None:
                raise Drift(f'a database named {name} exists and is not this workspace\'s')
        connection.execute(sql.SQL('ALTER DATABASE {} CONNECTION LIMIT {}').format(
            database, sql.Literal(self.limits.connections)))
        self._open_to(connection, name, desired.role)
        with self.connect(name) as inside:
            inside.execute(sql.SQL('ALTER SCHEMA public OWNER TO {}').format(role))
            inside.execute('REVOKE ALL ON SCHEMA public FROM PUBLIC')
        # Marked last: a database is found (and so dropped or kept) once it is complete.
        connection.execute(sql.SQL('COMMENT ON DATABASE {} IS {}').format(
            database, sql.Literal(database_mark(desired.user_id, workspace_id))))

    def _open_to(self, connection, name, role, connecting=()):
        """Database `name` open to `role` alone (and the admin): CONNECT and TEMPORARY taken
        from PUBLIC and from each other role in `connecting`, given to `role`."""
        database = sql.Identifier(name)
        others = [sql.SQL('PUBLIC') if grantee == '' else sql.Identifier(grantee)
                  for grantee in sorted(set(connecting) - {role, self.admin})]
        connection.execute(sql.SQL('REVOKE ALL ON DATABASE {} FROM {}').format(
            database, sql.SQL(', ').join([sql.SQL('PUBLIC'), *others])))
        connection.execute(sql.SQL('GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}')
                           .format(database, sql.Identifier(role)))

    def limit_differences(self, desired, found):
        """How the limits of what the server holds for a user (`found`) differ from this
        server's, in words (propagation.differences says the rest, such as what is left
        over); [] when they match."""
        if desired.role is None:
            return []
        problems = []
        if found.role is not None and found.connection_limit != self.limits.connections:
            problems.append(f'role {found.role} has connection limit {found.connection_limit}, '
                            f'not {self.limits.connections}')
        if found.role is not None and found.temp_file_limit != str(self.limits.temp_file_kb):
            problems.append(f'role {found.role} has temp_file_limit '
                            f'{found.temp_file_limit or "unset"}, '
                            f'not {self.limits.temp_file_kb}kB')
        for name, limit in sorted(found.database_limits.items()):
            if name in desired.databases.values() and limit != self.limits.connections:
                problems.append(f'database {name} has connection limit {limit}, '
                                f'not {self.limits.connections}')
        return problems

    def _limit(self, connection, desired, found):
        """Restate the limits that `found` shows to differ from this server's: the role's (a
        role made just now has them already) and its wanted databases' (made ones, too)."""
        name = sql.Identifier(desired.role)
        if found.role is not None and found.connection_limit != self.limits.connections:
            connection.execute(sql.SQL('ALTER ROLE {} CONNECTION LIMIT {}').format(
                name, sql.Literal(self.limits.connections)))
        if found.role is not None and found.temp_file_limit != str(self.limits.temp_file_kb):
            connection.execute(sql.SQL('ALTER ROLE {} SET temp_file_limit = {}').format(
                name, sql.Literal(self.limits.temp_file_kb)))
        for database, limit in found.database_limits.items():
            if database in desired.databases.values() and limit != self.limits.connections:
                connection.execute(sql.SQL('ALTER DATABASE {} CONNECTION LIMIT {}').format(
                    sql.Identifier(database), sql.Literal(self.limits.connections)))

    def _drop_role(self, connection, role):
        """Drop `role` (its databases are gone already) and everything it holds anywhere,
        whatever other tenants granted it: no new session first, none left open; then in each
        database where it owns objects or holds privileges (pg_shdepend), what it owns passes
        to the role of the user whose workspace that is (never the admin: a view or a
        SECURITY DEFINER function owned by a superuser would run with a superuser's rights),
        and its privileges go (DROP OWNED; in the admin's own database for shared objects such
        as a database's CONNECT). Idempotent, like converge."""
        name = sql.Identifier(role)
        connection.execute(sql.SQL('ALTER ROLE {} NOLOGIN').format(name))
        connection.execute('SELECT pg_terminate_backend(pid) FROM pg_stat_activity '
                           'WHERE usename = %s AND pid <> pg_backend_pid()', (role,))
        rows = connection.execute(
            "SELECT DISTINCT d.datname, o.rolname FROM pg_shdepend h "
            "LEFT JOIN pg_database d ON d.oid = h.dbid "
            "LEFT JOIN pg_shdescription m ON m.objoid = d.oid "
            "AND m.classoid = 'pg_database'::regclass "
            "LEFT JOIN pg_shdescription n ON n.classoid = 'pg_authid'::regclass "
            "AND starts_with(m.description, n.description || ' workspace ') "
            "LEFT JOIN pg_roles o ON o.oid = n.objoid AND o.rolname <> %s "
            "WHERE h.refclassid = 'pg_authid'::regclass "
            "AND h.refobjid = (SELECT oid FROM pg_roles WHERE rolname = %s)",
            (role, role)).fetchall()
        for database, owner in rows:
            with self.connect(database) as inside, inside.transaction():
                if owner is not None:
                    inside.execute(sql.SQL('REASSIGN OWNED BY {} TO {}').format(
                        name, sql.Identifier(owner)))
                inside.execute(sql.SQL('DROP OWNED BY {}').format(name))
        connection.execute(sql.SQL('DROP ROLE IF EXISTS {}').format(name))

    def marked_users(self, connection):
        """The ids of every user this server holds a role or a database of."""
        rows = connection.execute(
            "SELECT description FROM pg_shdescription "
            "WHERE classoid IN ('pg_authid'::regclass, 'pg_database'::regclass) "
            "AND description LIKE 'penstock user %'")
        return {description.split()[2] for (description,) in rows}


def _connecting_roles(acl):
    """The roles an ACL (aclitem[] as text) gives CONNECT (`c`); '' is PUBLIC."""
    roles = set()
    for item in acl:
        grantee, _, rest = item.partition('=')
        if 'c' in rest.split('/', 1)[0]:
            roles.add(grantee.strip('"'))
    return roles


class EmbeddedServer(Server):
    """The server Penstock starts for itself when WORKSPACE_DATABASE_URL is unset
    (embedded.EmbeddedPostgres under instance/), key `embedded`. Its URL and port are read
    from it each time: a start may move it to another port when its own was taken."""

    def __init__(self, embedded, limits=None):
        self.embedded, self.limits = embedded, limits or Limits()
        self.key, self.host, self.admin = 'embedded', '127.0.0.1', 'penstock'
        self._address, self._prepared, self._prepare_lock = '127.0.0.1', False, threading.Lock()
        self._roles = 'pg_authid'

    url = property(lambda self: self.embedded.url)
    port = property(lambda self: self.embedded.port)
    running = property(lambda self: self.embedded.running)

    def start(self):
        self.embedded.start()

    def stop(self):
        self.embedded.stop()


class Servers:
    """The configured servers by key, in configuration order (placement's tie-break), and
    the limits each holds its tenants to."""

    def __init__(self, servers=(), routing='direct', public_port=9193, limits=None):
        self.by_key = {server.key: server for server in servers}
        self.routing, self.public_port = routing, public_port
        self.limits = limits or Limits()

    def __getitem__(self, key):
        try:
            return self.by_key[key]
        except KeyError:
            raise Drift(f'no configured server is {key}') from None

    def __iter__(self):
        return iter(self.by_key.values())

    def endpoint(self, key):
        """(port, hostaddr or None) of a connection string to a workspace on server `key`:
        with routing `dns` the workspace names resolve (to the servers or a pooler routing by
        name) on `public_port`; with `direct`, the server's own port and address."""
        server = self.by_key.get(key)
        if self.routing == 'dns' or server is None:
            return self.public_port, None
        return server.port, server.address

    def start(self):
        for server in self:
            server.start()

    def stop(self):
        for server in self:
            server.stop()
