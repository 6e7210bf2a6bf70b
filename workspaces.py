"""Workspaces and the database password that reaches them: each workspace is a
PostgreSQL database reached by a connection string; the password (encrypted at
rest) is rotated and carried to every workspace by propagation jobs, which
propagation.py's workers run."""
import datetime
import re
import secrets
import string

from peewee import CharField, Check, DateTimeField, ForeignKeyField, IntegerField, TextField

from database import decrypt, encrypt, skip_locked, write_transaction
from models import (AuditRecord, BaseModel, Config, Invalid, Owned, Refused, User, minted,
                    new_id, text_problem, utcnow)


WORKSPACE_HANDLE_RE = re.compile(r'^[a-z0-9]{1,23}$')
WORKSPACE_HANDLE_RULES = '1–23 lowercase letters or digits.'
WORKSPACE_LIMIT = 10
WORKSPACE_PORT = 9193
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
    def rotate(cls, user, ip=None):
        """A new password, and a propagation job for each workspace; writes
        `user.password.rotate` (with the version, never the password)."""
        with write_transaction():
            current = cls.for_user(user)
            now = utcnow()
            version = current.version + 1
            cls.update(id=new_id('d'), ciphertext=encrypt(cls.new_password()),
                       version=version, created_at=now).where(cls.user == user).execute()
            workspaces = list(Workspace.select(Workspace.id).where(Workspace.user == user))
            if workspaces:
                PropagationJob.insert_many(
                    [dict(user=user, workspace=w.id, password_version=version, status='pending',
                          run_after=now, created_at=now) for w in workspaces]).execute()
            AuditRecord.write('user.password.rotate', user, ip, target=user,
                              data={'version': version, 'workspaces': len(workspaces)})
        return cls.get(cls.user == user)


class Workspace(Owned):
    """A Postgres endpoint of a user's, reached at `host` with the user's database password."""
    id = CharField(primary_key=True, default=lambda: new_id('w'))
    user = ForeignKeyField(User, backref='workspaces', on_delete='CASCADE')
    handle = CharField()
    database_name = CharField(unique=True)
    password_version = IntegerField(default=0)  # the database password version it accepts
    password_applied_at = DateTimeField(null=True)

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
        """postgresql://{user handle}:{password}@{host}:9193/{database name}."""
        user_handle = user_handle or self.user.handle
        return (f'postgresql://{user_handle}:{password}@{self.host(user_handle)}:'
                f'{WORKSPACE_PORT}/{self.database_name}')

    def password_state(self, current_version):
        """'applied' when the workspace accepts password `current_version`, else 'pending'."""
        pending, applied = self.PASSWORD_STATES
        return applied if self.password_version >= current_version else pending

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
            password = DatabasePassword.for_user(user)
            now = utcnow()
            workspace = cls.create(user=user, handle=handle, database_name=_database_name(),
                                   password_version=password.version, password_applied_at=now,
                                   created_at=now)
            AuditRecord.write('workspace.create', user, ip, target=workspace,
                              data=workspace.audit_data)
        return workspace


def _database_name():
    """A short random database name: a letter, then 7 lowercase letters or digits."""
    return (secrets.choice(string.ascii_lowercase)
            + ''.join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(7)))


class PropagationJob(BaseModel):
    """Bring one workspace to (at least) database password `password_version`. Durable:
    a worker leases a job, so one that dies mid-way leaves it to be claimed again."""
    user = ForeignKeyField(User, on_delete='CASCADE')
    workspace = ForeignKeyField(Workspace, backref='propagation_jobs', on_delete='CASCADE')
    password_version = IntegerField()
    status = CharField(default='pending', constraints=[
        Check("status IN ('pending', 'applied')")])
    attempts = IntegerField(default=0)
    run_after = DateTimeField(default=utcnow)
    locked_until = DateTimeField(null=True)
    last_error = TextField(null=True)
    created_at = DateTimeField(default=utcnow)
    applied_at = DateTimeField(null=True)

    class Meta:
        indexes = ((('status', 'run_after'), False),)

    @classmethod
    def claim(cls, lease):
        """Lease the next due job for `lease` (a timedelta), or None. A workspace never has
        two jobs leased at once, so passwords reach it in order."""
        now = utcnow()
        with write_transaction(exclusive=False):  # on PostgreSQL: FOR UPDATE SKIP LOCKED
            busy = (cls.select(cls.workspace)
                    .where(cls.status == 'pending', cls.locked_until > now))
            query = (cls.select().where(cls.status == 'pending', cls.run_after <= now,
                                        cls.locked_until.is_null() | (cls.locked_until <= now),
                                        cls.workspace.not_in(busy))
                     .order_by(cls.run_after, cls.id).limit(1))
            # Workers on other hosts skip what is being claimed rather than wait. The
            # workspace row is locked too: `busy` cannot see a lease not yet committed,
            # and a second worker must not take that workspace's next job meanwhile.
            job = skip_locked(query.join(Workspace)).first()
            if job is None:
                return None
            job.locked_until, job.attempts = now + lease, job.attempts + 1
            cls.update(locked_until=job.locked_until, attempts=job.attempts).where(
                cls.id == job.id).execute()
        return job

    def applied(self, version):
        """The workspace now accepts password `version`: record it, and finish this job and
        every older one of the workspace (a newer password supersedes them)."""
        now = utcnow()
        with write_transaction():
            Workspace.update(password_version=version, password_applied_at=now).where(
                Workspace.id == self.workspace_id, Workspace.password_version < version
            ).execute()
            PropagationJob.update(status='applied', applied_at=now, locked_until=None,
                                  last_error=None).where(
                PropagationJob.workspace == self.workspace_id,
                PropagationJob.status == 'pending',
                PropagationJob.password_version <= version).execute()

    def failed(self, error):
        """Try again later: 2, 4, 8 … seconds after this attempt, at most
        PROPAGATION_BACKOFF_MAX."""
        delay = min(2 ** self.attempts, PROPAGATION_BACKOFF_MAX)
        PropagationJob.update(locked_until=None, last_error=str(error)[:500],
                              run_after=utcnow() + datetime.timedelta(seconds=delay)).where(
            PropagationJob.id == self.id).execute()
