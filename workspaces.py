"""Workspaces and the database password that reaches them: each workspace is a real
PostgreSQL database on one of the workspace servers (workspace_servers.py), reached by a
connection string; the password is encrypted at rest. Every change a server must follow
(a workspace made or deleted, a rotated password, a new handle, a deleted account) queues a
propagation job in the same transaction, and propagation.py's workers carry it out."""
import datetime
import re
import secrets
import string

from peewee import (BooleanField, CharField, Check, CompositeKey, DateTimeField, ForeignKeyField,
                    IntegerField, TextField, fn)

from database import decrypt, encrypt, skip_locked, try_lock, write_transaction
from mail import Email
from models import (AuditRecord, BaseModel, Config, Invalid, Owned, Refused, User, minted,
                    new_id, text_problem, utcnow)
from workspace_servers import Desired, Drift


WORKSPACE_HANDLE_RE = re.compile(r'^[a-z0-9]{1,23}$')
WORKSPACE_HANDLE_RULES = '1–23 lowercase letters or digits.'
WORKSPACE_LIMIT = 10
PROPAGATION_BACKOFF_MAX = 300  # seconds between attempts at most


class DatabasePassword(BaseModel):
    """The one password a user logs in to every workspace with, encrypted with the
    configured keys (database.encrypt; never stored in plain text). Each rotation gives it
    a new id."""
    user = ForeignKeyField(User, primary_key=True, on_delete='CASCADE')
    id = CharField(unique=True, default=lambda: new_id('d'))
    ciphertext = TextField()
    version = IntegerField(default=1)
    created_at = DateTimeField(default=utcnow)

    @staticmethod
    def new_password():
        """A readable password: four groups of four lowercase letters and digits (82 bits)."""
        alphabet = string.ascii_lowercase + string.digits
        return minted('-'.join(''.join(secrets.choice(alphabet) for _ in range(4))
                               for _ in range(4)))

    @staticmethod
    def mask(password):
        """`password` with all but its first and last two characters hidden, dashes kept."""
        return ''.join(c if c == '-' or i < 2 or i >= len(password) - 2 else '*'
                       for i, c in enumerate(password))

    @property
    def password(self):
        """The password in plain text, for the connection string and the API only."""
        return decrypt(self.ciphertext)

    @property
    def masked(self):
        return self.mask(self.password)

    @classmethod
    def for_user(cls, user):
        """The user's password, made on first use."""
        row = cls.get_or_none(cls.user == user)
        if row is None:
            with write_transaction():
                cls.insert(user=user, id=new_id('d'), ciphertext=encrypt(cls.new_password()),
                           version=1, created_at=utcnow()).on_conflict_ignore().execute()
            row = cls.get(cls.user == user)
        return row

    @classmethod
    def rotate(cls, user, ip=None, end_connections=False, tell=True):
        """A new password, and a propagation job for each workspace (which also ends the
        role's open connections when `end_connections`); writes `user.password.rotate` (with
        the version, never the password) and, when `tell`, its System email."""
        with write_transaction():
            current = cls.for_user(user)
            now = utcnow()
            version = current.version + 1
            cls.update(id=new_id('d'), ciphertext=encrypt(cls.new_password()),
                       version=version, created_at=now).where(cls.user == user).execute()
            count = Workspace.select().where(Workspace.user == user).count()
            PropagationJob.follow(user, 'user.password.rotate', end_connections)
            data = {'version': version, 'workspaces': count}
            if end_connections:
                data['end_connections'] = True
            AuditRecord.write('user.password.rotate', user, ip, target=user, data=data)
            if tell:
                Email.tell('user.password.rotate', user, ip, **data)
        return cls.get(cls.user == user)


class Workspace(Owned):
    """A user's PostgreSQL database on workspace server `server` (a key of
    Config.workspace_servers, kept for good), reached at `host` with the user's database
    password. `password_version` is the version its server accepts (0 until the database
    has been made there), and `role` the name it accepts it for."""
    id = CharField(primary_key=True, default=lambda: new_id('w'))
    user = ForeignKeyField(User, backref='workspaces', on_delete='CASCADE')
    handle = CharField()
    database_name = CharField(unique=True)
    server = CharField(null=True)  # None: made before workspaces were real, not placed yet
    password_version = IntegerField(default=0)
    password_applied_at = DateTimeField(null=True)
    role = CharField(null=True)  # the name its server's role had when it was last applied

    class Meta:
        indexes = ((('user', 'handle'), True),)

    # Why New Workspace is off at the limit, and why a workspace past it is refused.
    LIMIT_REACHED = (f'You have {WORKSPACE_LIMIT} workspaces, the most an account can have. '
                     'Delete one to create another.')
    PASSWORD_STATES = ('pending', 'applied')
    DELETED = 'workspace.delete'  # its propagation jobs go with it

    @property
    def audit_data(self):
        """What every audit record of the workspace says of it."""
        return {'workspace_id': self.id, 'handle': self.handle}

    def host(self, user_handle=None):
        """The DNS name: {user handle}-{workspace handle}.{workspace domain}."""
        return f'{user_handle or self.user.handle}-{self.handle}.{Config.workspace_domain}'

    def connection_string(self, password, user_handle=None):
        """postgresql://{user handle}:{password}@{host}:{port}/{database name}, which libpq
        (psql, psycopg) connects with as it is: where the host name does not resolve, it
        carries ?hostaddr= with the server's address (see Servers.endpoint)."""
        user_handle = user_handle or self.user.handle
        port, address = Config.workspace_servers.endpoint(self.server)
        return (f'postgresql://{user_handle}:{password}@{self.host(user_handle)}:{port}/'
                f'{self.database_name}' + (f'?hostaddr={address}' if address else ''))

    @property
    def ready(self):
        """Whether the workspace's database exists on its server yet."""
        return self.password_version > 0

    def password_state(self, current_version, user_handle):
        """'applied' when the workspace's server lets role `user_handle` in with password
        `current_version`, else 'pending' (a rotation or a handle change on its way)."""
        pending, applied = self.PASSWORD_STATES
        current = self.password_version >= current_version and self.role == user_handle
        return applied if current else pending

    @classmethod
    def provision(cls, user, handle, ip=None):
        """Create a workspace (raises Invalid or Refused); it starts with the current
        database password. Writes `workspace.create`."""
        handle = (handle or '').strip()
        if not WORKSPACE_HANDLE_RE.match(handle):
            raise Invalid({'handle': text_problem(handle)
                           or 'A workspace handle is ' + WORKSPACE_HANDLE_RULES})
        with write_transaction():
            if cls.select().where(cls.user == user).count() >= WORKSPACE_LIMIT:
                raise Refused(cls.LIMIT_REACHED)
            if cls.select().where(cls.user == user, cls.handle == handle).exists():
                raise Invalid({'handle': 'You already have a workspace with this handle.'})
            DatabasePassword.for_user(user)
            workspace = cls.create(user=user, handle=handle, database_name=_database_name(),
                                   server=cls.placement(), created_at=utcnow())
            PropagationJob.queue(user.id, [workspace.server], 'workspace.create')
            AuditRecord.write('workspace.create', user, ip, target=workspace,
                              data=workspace.audit_data)
        return workspace

    def remove(self, ip=None):
        """Delete the workspace; its server drops the database (see Owned.remove)."""
        with write_transaction():
            super().remove(ip)
            PropagationJob.queue(self.user_id, [self.server], self.DELETED)

    @classmethod
    def placement(cls):
        """The configured server with the fewest workspaces (the first of those tied)."""
        servers = [server.key for server in Config.workspace_servers]
        if not servers:
            raise Refused('No workspace server is configured.')
        counts = dict(cls.select(cls.server, fn.COUNT(cls.id)).where(cls.server.in_(servers))
                      .group_by(cls.server).tuples())
        return min(servers, key=lambda key: counts.get(key, 0))

    @classmethod
    def place_unplaced(cls):
        """Put each workspace made before workspaces were real on a server, and queue its
        making there; returns how many there were."""
        placed = 0
        for workspace in cls.select().where(cls.server.is_null()):
            with write_transaction():
                if cls.update(server=cls.placement()).where(
                        cls.id == workspace.id, cls.server.is_null()).execute():
                    server = cls.get_by_id(workspace.id).server
                    PropagationJob.queue(workspace.user_id, [server], 'workspace.create')
                    placed += 1
        return placed


def _database_name():
    """A short random database name: a letter, then 7 lowercase letters or digits (never a
    server's own database)."""
    while True:
        name = (secrets.choice(string.ascii_lowercase) + ''.join(
            secrets.choice(string.ascii_lowercase + string.digits) for _ in range(7)))
        if name != 'postgres':
            return name


class PropagationJob(BaseModel):
    """Bring server `server` to hold what the metadata says of user `user_id`: their role,
    password and databases there (workspace_servers.Server.converge). No foreign keys: a job
    outlives the workspace or account whose database and role it drops. Durable: a worker
    leases a job, so one that dies mid-way leaves it to be claimed again; jobs of one user
    and server are carried out together, by whichever is claimed first."""
    user_id = CharField()
    server = CharField()
    reason = CharField()  # the audit action that queued it: workspace.create, user.delete, …
    status = CharField(default='pending', constraints=[
        Check("status IN ('pending', 'applied')")])
    attempts = IntegerField(default=0)
    run_after = DateTimeField(default=utcnow)
    locked_until = DateTimeField(null=True)
    last_error = TextField(null=True)
    created_at = DateTimeField(default=utcnow)
    applied_at = DateTimeField(null=True)
    # Once the server holds the new state, end the role's open connections there too.
    end_connections = BooleanField(default=False)

    class Meta:
        indexes = ((('status', 'run_after'), False), (('user_id', 'server', 'status'), False))

    @classmethod
    def queue(cls, user_id, servers, reason, end_connections=False):
        """A job for each of `servers` (keys; None, an unplaced workspace's, is skipped)."""
        now = utcnow()
        rows = [dict(user_id=user_id, server=server, reason=reason, status='pending',
                     run_after=now, created_at=now, end_connections=end_connections)
                for server in sorted(set(servers) - {None})]
        if rows:
            cls.insert_many(rows).execute()

    @classmethod
    def follow(cls, user, reason, end_connections=False):
        """Queue a job for every server that holds one of `user`'s workspaces (a rotated
        password, a new handle, a deleted account); inside the change's transaction."""
        servers = Workspace.select(Workspace.server).where(Workspace.user == user).distinct()
        cls.queue(user.id, [row.server for row in servers], reason, end_connections)

    @staticmethod
    def ends_connections(ids):
        """Whether any of jobs `ids` asks for the role's open connections to be ended."""
        cls = PropagationJob
        return cls.select().where(cls.id.in_(ids), cls.end_connections).exists()

    @classmethod
    def claim(cls, lease):
        """Lease the next due job for `lease` (a timedelta), or None. A user's jobs on one
        server are never leased twice at once (workers would only wait for each other)."""
        now = utcnow()
        with write_transaction(exclusive=False):  # on PostgreSQL: FOR UPDATE SKIP LOCKED
            query = (cls.select().where(cls.status == 'pending', cls.run_after <= now,
                                        cls.locked_until.is_null() | (cls.locked_until <= now),
                                        ~fn.EXISTS(cls._leased(now)))
                     .order_by(cls.run_after, cls.id).limit(1))
            # Workers on other hosts skip what is being claimed rather than wait. `_leased`
            # sees committed leases only: the lock of the user and server keeps two workers
            # from claiming two of its jobs at once, and once it is held, a lease another
            # worker committed meanwhile is visible.
            job = skip_locked(query).first()
            if job is None or not try_lock(f'propagation {job.user_id} {job.server}'):
                return None
            if cls._leased(now, job).exists():
                return None
            job.locked_until, job.attempts = now + lease, job.attempts + 1
            cls.update(locked_until=job.locked_until, attempts=job.attempts).where(
                cls.id == job.id).execute()
        return job

    @classmethod
    def _leased(cls, now, of=None):
        """A condition: a job of the same user and server as `of` (default: the row the
        outer query reads) is leased."""
        leased = cls.alias()
        of = of or cls
        return leased.select().where(leased.user_id == of.user_id, leased.server == of.server,
                                     leased.status == 'pending', leased.locked_until > now)

    def desired(self):
        """(ids of the user's pending jobs on this server, what the server should hold).
        Read in that order, after the server's lock is taken: every change whose job is in
        the list is in what was read, and a job queued later stays pending and runs again."""
        cls = PropagationJob
        ids = [row.id for row in cls.select(cls.id).where(
            cls.user_id == self.user_id, cls.server == self.server, cls.status == 'pending')]
        desired = Desired(self.user_id, server=self.server)
        user = User.get_or_none(User.id == self.user_id)
        password = user and DatabasePassword.get_or_none(DatabasePassword.user == user)
        if user is not None and password is not None:
            desired.role, desired.password = user.handle, password.password
            desired.version = password.version
            desired.verifier = RoleVerifier.current(self.user_id, self.server, password.version)
            desired.databases = dict(Workspace.select(Workspace.id, Workspace.database_name)
                                     .where(Workspace.user == user,
                                            Workspace.server == self.server).tuples())
        return ids, desired

    @staticmethod
    def applied(ids, desired):
        """The server now holds `desired`: its workspaces accept password `desired.version`,
        and jobs `ids` are done."""
        now = utcnow()
        with write_transaction():
            RoleVerifier.record(desired, now)
            Workspace.update(password_version=desired.version, role=desired.role,
                             password_applied_at=now).where(
                Workspace.id.in_(list(desired.databases)),
                (Workspace.password_version < desired.version)
                | Workspace.role.is_null() | (Workspace.role != desired.role)).execute()
            PropagationJob.update(status='applied', applied_at=now, locked_until=None,
                                  last_error=None).where(PropagationJob.id.in_(ids)).execute()

    def failed(self, error):
        """Try again later: 2, 4, 8 … seconds after this attempt, at most
        PROPAGATION_BACKOFF_MAX; the user's other jobs on that server wait as long (they
        would meet the same server). Only the error's type is kept (a driver's message could
        quote a statement), or a Drift's own words (names, never a secret)."""
        cls = PropagationJob
        delay = min(2 ** self.attempts, PROPAGATION_BACKOFF_MAX)
        run_after = utcnow() + datetime.timedelta(seconds=delay)
        kept = f'Drift: {error}' if isinstance(error, Drift) else type(error).__name__
        with write_transaction():
            cls.update(locked_until=None, last_error=kept[:500], run_after=run_after).where(
                cls.id == self.id).execute()
            cls.update(run_after=run_after).where(
                cls.user_id == self.user_id, cls.server == self.server, cls.status == 'pending',
                cls.run_after < run_after).execute()


class RoleVerifier(BaseModel):
    """The SCRAM verifier Penstock last set for user `user_id`'s role on server `server`, and
    the password version it was made from: the server's pg_authid.rolpassword holds exactly
    this text unless someone changed the password behind Penstock's back (watch.py)."""
    user_id = CharField()
    server = CharField()
    role = CharField()
    version = IntegerField()
    verifier = TextField()
    set_at = DateTimeField(default=utcnow)

    class Meta:
        primary_key = CompositeKey('server', 'user_id')

    @classmethod
    def current(cls, user_id, server, version):
        """The verifier on record for password `version`, or None (another version's is no
        use to a converge: the server must get the new password)."""
        row = cls.get_or_none(cls.user_id == user_id, cls.server == server)
        return row.verifier if row is not None and row.version == version else None

    @classmethod
    def record(cls, desired, now):
        """Keep what a converge left on the server for `desired`: its verifier, or nothing
        once the role is gone. Inside applied()'s transaction."""
        if desired.role is None or not desired.databases or desired.verifier is None:
            cls.delete().where(cls.user_id == desired.user_id,
                               cls.server == desired.server).execute()
            return
        cls.insert(user_id=desired.user_id, server=desired.server, role=desired.role,
                   version=desired.version, verifier=desired.verifier, set_at=now).on_conflict(
            conflict_target=[cls.server, cls.user_id],
            update={cls.role: desired.role, cls.version: desired.version,
                    cls.verifier: desired.verifier, cls.set_at: now}).execute()

    @classmethod
    def on(cls, server):
        """{user id: (role, verifier)} of every role on record on `server`."""
        return {user_id: (role, verifier) for user_id, role, verifier in
                cls.select(cls.user_id, cls.role, cls.verifier).where(cls.server == server)
                .tuples()}


class ServerCheck(BaseModel):
    """When workspace server `server` was last checked (watch.py), and until when a worker
    holds it: one worker at a time checks a server, whichever host it runs on."""
    server = CharField(primary_key=True)
    locked_until = DateTimeField(null=True)
    checked_at = DateTimeField(null=True)

    @classmethod
    def claim(cls, server, lease, every):
        """Whether this worker now holds `server` for `lease` (a timedelta): only when no
        other holds it and it was last checked `every` (a timedelta) ago or more."""
        now = utcnow()
        with write_transaction(exclusive=False):
            cls.insert(server=server).on_conflict_ignore().execute()
            return cls.update(locked_until=now + lease).where(
                cls.server == server,
                cls.locked_until.is_null() | (cls.locked_until <= now),
                cls.checked_at.is_null() | (cls.checked_at <= now - every)).execute() == 1

    @classmethod
    def done(cls, server):
        """The check of `server` is over: free it; it falls due again `every` (see claim)
        from now."""
        cls.update(locked_until=None, checked_at=utcnow()).where(cls.server == server).execute()
