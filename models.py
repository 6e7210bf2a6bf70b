"""The Peewee models of Penstock and the account rules that belong to them."""
import datetime
import hashlib
import json
import os
import re
import secrets
import unicodedata

from peewee import (
    BooleanField,
    CharField,
    DatabaseProxy,
    DateTimeField,
    ForeignKeyField,
    IntegerField,
    IntegrityError,
    Model,
    SqliteDatabase,
    TextField,
)
from playhouse.db_url import connect
from playhouse.migrations import Runner
from werkzeug.security import check_password_hash, generate_password_hash

db = DatabaseProxy()

MIGRATIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'migrations')
SQLITE_PRAGMAS = {'journal_mode': 'wal', 'foreign_keys': 1, 'busy_timeout': 5000,
                  'synchronous': 'normal'}

HANDLE_RE = re.compile(r'^[a-z0-9]([a-z0-9]|-(?=[a-z0-9])){0,38}$')
HANDLE_RULES = ('1–39 lowercase letters, digits or single hyphens; '
                'starts and ends with a letter or digit.')
EMAIL_RE = re.compile(r'^[^@\s]+@[^@\s]+\.[^@\s.]+$')
PASSWORD_MIN, PASSWORD_MAX = 8, 128
DISPLAY_NAME_MAX = 100
SESSION_TOUCH_EVERY = datetime.timedelta(minutes=1)
ID_ALPHABET = '0123456789abcdefghijklmnopqrstuv'
# Checked against when the login is unknown, so a miss costs as much as a wrong password.
_DUMMY_HASH = generate_password_hash(secrets.token_urlsafe(16))


def utcnow():
    """The current time in UTC, naive, as the database stores it."""
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def new_id(prefix):
    """A public id that cannot be guessed: prefix, underscore, 20 base32 characters."""
    return prefix + '_' + ''.join(secrets.choice(ID_ALPHABET) for _ in range(20))


def sha256(value):
    return hashlib.sha256(value.encode()).hexdigest()


class Invalid(Exception):
    """Input broke a rule; `errors` maps each field to a message a person can act on."""

    def __init__(self, errors):
        super().__init__(errors)
        self.errors = errors


def open_database(url):
    """Open the database at a DATABASE_URL, with the pragmas SQLite needs here."""
    if url.startswith('sqlite'):
        return connect(url, pragmas=SQLITE_PRAGMAS, check_same_thread=False)
    return connect(url)


def migrate(database):
    """Apply every pending migration in migrations/; returns their names."""
    return Runner(database, MIGRATIONS).up()


class BaseModel(Model):
    class Meta:
        database = db
        legacy_table_names = False


class User(BaseModel):
    id = CharField(primary_key=True, default=lambda: new_id('u'))
    email = CharField(unique=True)
    handle = CharField(unique=True)
    display_name = CharField(null=True)
    password_hash = CharField()
    status = CharField(default='accepted')
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(null=True)
    version_id = IntegerField(default=1)

    session = None  # the Session this request is authenticated by, set by the login loader

    # Flask-Login reads these; the id it keeps in the cookie is the session's secret.
    is_authenticated = True
    is_active = True
    is_anonymous = False

    def get_id(self):
        return self.session.secret

    @property
    def name(self):
        """What the header calls the user: the display name, or the handle."""
        return self.display_name or self.handle

    @property
    def initials(self):
        words = [w for w in re.split(r'[\s._-]+', self.name) if w]
        return ''.join(w[0] for w in words[:2]).upper() or '?'

    @classmethod
    def sign_up(cls, email, handle, password, ip=None):
        """Create an account with its preferences; raises Invalid with every broken rule."""
        email = (email or '').strip().lower()
        handle = (handle or '').strip().lower()
        password = password or ''
        errors = {}
        if not EMAIL_RE.match(email) or len(email) > 254:
            errors['email'] = 'Enter an email address like name@example.com.'
        if not HANDLE_RE.match(handle):
            errors['handle'] = 'A handle is ' + HANDLE_RULES
        if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
            errors['password'] = (f'Use {PASSWORD_MIN} to {PASSWORD_MAX} characters.')
        if errors:
            raise Invalid(errors)
        with write_transaction():
            if cls.select().where(cls.email == email).exists():
                errors['email'] = 'An account with this email already exists. Log in instead.'
            if cls.select().where(cls.handle == handle).exists():
                errors['handle'] = 'This handle is taken. Choose another.'
            if errors:
                raise Invalid(errors)
            try:
                user = cls.create(email=email, handle=handle,
                                  password_hash=generate_password_hash(password))
            except IntegrityError:
                raise Invalid({'handle': 'This handle or email is taken.'}) from None
            Preferences.create(user=user)
            AuditRecord.write('user.signup', user, ip, target=user)
        return user

    @classmethod
    def authenticate(cls, login, password):
        """The user whose email or handle is `login` and whose password matches, or None."""
        login = (login or '').strip().lower()
        field = cls.email if '@' in login else cls.handle
        user = cls.get_or_none(field == login)
        if user is None:
            check_password_hash(_DUMMY_HASH, password or '')
            return None
        return user if check_password_hash(user.password_hash, password or '') else None

    def set_display_name(self, value, ip=None):
        """Validate and save a new display name, writing `user.update` when it changes."""
        value = (value or '').strip()
        if not value:
            raise Invalid({'display_name': 'Enter a display name.'})
        if len(value) > DISPLAY_NAME_MAX:
            raise Invalid({'display_name':
                           f'Use at most {DISPLAY_NAME_MAX} characters (this is {len(value)}).'})
        if any(unicodedata.category(c) in ('Cc', 'Cf', 'Zl', 'Zp') for c in value):
            raise Invalid({'display_name': 'Remove line breaks and other control characters.'})
        if value == self.display_name:
            return False
        with db.atomic():
            old = self.display_name
            self.display_name = value
            self.updated_at = utcnow()
            self.version_id += 1
            self.save()
            AuditRecord.write('user.update', self, ip, target=self,
                              data={'display_name': {'old': old, 'new': value}})
        return True


class Preferences(BaseModel):
    """Which emails a user wants; System emails are always sent and so not stored."""
    user = ForeignKeyField(User, primary_key=True, backref='preferences_row',
                           on_delete='CASCADE')
    community_updates = BooleanField(default=False)
    product_updates = BooleanField(default=True)
    tips_and_tricks = BooleanField(default=False)
    updated_at = DateTimeField(null=True)
    version_id = IntegerField(default=1)

    CHOICES = (
        ('community_updates', 'Community Updates',
         'Get notified of community information and events you may be interested in.'),
        ('product_updates', 'Product Updates',
         'Get notified of product updates as they are released.'),
        ('tips_and_tricks', 'Tips & Tricks',
         'Get useful tips & tricks on using Penstock.'),
    )

    @classmethod
    def for_user(cls, user):
        return cls.get(cls.user == user)

    def change(self, values, user, ip=None):
        """Set each named switch; returns True when something changed (and was audited)."""
        changed = {name: {'old': getattr(self, name), 'new': bool(on)}
                   for name, on in values.items() if getattr(self, name) != bool(on)}
        if not changed:
            return False
        with db.atomic():
            for name, diff in changed.items():
                setattr(self, name, diff['new'])
            self.updated_at = utcnow()
            self.version_id += 1
            self.save()
            AuditRecord.write('user.preferences.update', user, ip, target=user,
                              data={'communication_' + n: 'enabled' if d['new'] else 'disabled'
                                    for n, d in changed.items()})
        return True


class Session(BaseModel):
    """One browser login. The cookie carries a secret whose hash is `token_hash`."""
    id = CharField(primary_key=True, default=lambda: new_id('s'))
    user = ForeignKeyField(User, backref='sessions', on_delete='CASCADE')
    token_hash = CharField(unique=True)
    created_at = DateTimeField(default=utcnow)
    last_seen_at = DateTimeField(default=utcnow)
    ip = CharField(null=True)
    user_agent = CharField(null=True)

    secret = None  # set only on the instance that was just opened

    @classmethod
    def open(cls, user, ip, user_agent):
        """Start a session for `user` and write `user.login`."""
        secret = secrets.token_urlsafe(32)
        with db.atomic():
            session = cls.create(user=user, token_hash=sha256(secret), ip=ip,
                                 user_agent=(user_agent or '')[:400])
            AuditRecord.write('user.login', user, ip, target=user,
                              data={'session_id': session.id})
        session.secret = secret
        return session

    @classmethod
    def lookup(cls, secret, max_idle):
        """The live session whose cookie secret this is, touched at most once a minute."""
        session = (cls.select(cls, User).join(User)
                   .where(cls.token_hash == sha256(secret)).first())
        if session is None:
            return None
        now = utcnow()
        if now - session.last_seen_at > max_idle:
            session.delete_instance()
            return None
        if now - session.last_seen_at > SESSION_TOUCH_EVERY:
            cls.update(last_seen_at=now).where(cls.id == session.id).execute()
        session.secret = secret
        return session

    def close(self, ip=None):
        """Log this session out: the row goes, so the cookie stops working everywhere."""
        with db.atomic():
            self.delete_instance()
            AuditRecord.write('user.logout', self.user, ip, target=self.user,
                              data={'session_id': self.id})


class AuditRecord(BaseModel):
    """One thing that happened to an account. Written once, never updated."""
    id = CharField(primary_key=True, default=lambda: new_id('a'))
    identity = ForeignKeyField(User, backref='audit_records', on_delete='CASCADE')
    identity_handle = CharField()
    action_type = CharField()
    actor_id = CharField(null=True)
    actor_handle = CharField(null=True)
    actor_display_name = CharField(null=True)
    actor_ip = CharField(null=True)
    target_id = CharField(null=True)
    target_handle = CharField(null=True)
    data = TextField(default='{}')
    created_at = DateTimeField(default=utcnow)

    class Meta:
        indexes = ((('identity', 'created_at', 'id'), False),)

    @classmethod
    def write(cls, action_type, actor, ip, target=None, data=None, identity=None):
        identity = identity or actor
        return cls.create(
            identity=identity, identity_handle=identity.handle, action_type=action_type,
            actor_id=actor.id, actor_handle=actor.handle,
            actor_display_name=actor.display_name, actor_ip=ip,
            target_id=getattr(target, 'id', None), target_handle=getattr(target, 'handle', None),
            data=json.dumps(data or {}, sort_keys=True))


def write_transaction():
    """A transaction for read-modify-write: on SQLite it takes the write lock up front."""
    if isinstance(db.obj, SqliteDatabase):
        return db.atomic('IMMEDIATE')
    return db.atomic()

