"""The Peewee models of Penstock and the account rules that belong to them."""
import base64
import datetime
import hashlib
import hmac
import json
import re
import secrets
import string
import unicodedata
import zlib

from peewee import (
    BlobField,
    BooleanField,
    CharField,
    Check,
    DateTimeField,
    ForeignKeyField,
    IntegerField,
    IntegrityError,
    TextField,
    Tuple,
)
from werkzeug.security import check_password_hash, generate_password_hash

import imaging
from database import PreparedModel, db, decrypt, encrypt, locked, skip_locked, write_transaction

HANDLE_RE = re.compile(r'^[a-z0-9]([a-z0-9]|-(?=[a-z0-9])){0,38}$')
HANDLE_RULES = ('1–39 lowercase letters, digits or single hyphens; '
                'starts and ends with a letter or digit.')
EMAIL_RE = re.compile(r'^[^@\s]+@[^@\s]+\.[^@\s.]+$')
EMAIL_MAX = 254
PASSWORD_MIN, PASSWORD_MAX = 8, 128
DISPLAY_NAME_MAX = 100
SESSION_TOUCH_EVERY = datetime.timedelta(minutes=1)
USER_AGENT_MAX = 512  # characters of a User-Agent kept with a session: enough to name it
ID_ALPHABET = '0123456789abcdefghijklmnopqrstuv'
TOKEN_LIMIT = 2
TOKEN_TOUCH_EVERY = datetime.timedelta(minutes=1)
TEMPORARY_TOKEN_LIFETIME = datetime.timedelta(days=30)
LOGIN_REQUEST_LIFETIME = datetime.timedelta(minutes=15)
LOGIN_CODE_ATTEMPTS = 3
AVATAR_UPLOAD_LIFETIME = datetime.timedelta(hours=1)
WORKSPACE_HANDLE_RE = re.compile(r'^[a-z0-9]{1,23}$')
WORKSPACE_HANDLE_RULES = '1–23 lowercase letters or digits.'
WORKSPACE_LIMIT = 10
WORKSPACE_PORT = 9193
# A handle someone let go (by changing it or deleting the account) is theirs alone this long.
HANDLE_HOLD = datetime.timedelta(days=30)
RESERVED_HANDLES = frozenset({
    'about', 'account', 'accounts', 'admin', 'administrator', 'api', 'app', 'assets', 'auth',
    'billing', 'blog', 'cli', 'console', 'dashboard', 'db', 'dns', 'docs', 'help', 'login',
    'logout', 'mail', 'me', 'new', 'org', 'penstock', 'postgres', 'reauth', 'root', 'security',
    'settings', 'signup', 'static', 'status', 'support', 'system', 'user', 'users', 'workspace',
    'workspaces', 'www',
})
# Dangerous actions need a password typed this recently in the session.
RECENT_LOGIN = datetime.timedelta(minutes=15)
PROPAGATION_BACKOFF_MAX = 300  # seconds between attempts at most
# Checked against when the login is unknown, so a miss costs as much as a wrong password.
_DUMMY_HASH = generate_password_hash(secrets.token_urlsafe(16))
# Called with each secret as it is made (a token's, a session cookie's, a database password),
# before it is handed out or could reach a log line: the test suite registers one here and
# checks that no log record ever holds what it was given.
SECRET_OBSERVERS = []


class Config:
    """What the models need from the app's configuration; create_app sets it."""
    workspace_domain = 'workspaces.penstock.test'


def utcnow():
    """The current time in UTC, naive, as the database stores it."""
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def new_id(prefix):
    """A public id that cannot be guessed: prefix, underscore, 20 base32 characters (100
    random bits, in ID_ALPHABET)."""
    return prefix + '_' + base64.b32hexencode(secrets.token_bytes(13)).decode()[:20].lower()


def sha256(value):
    return hashlib.sha256(value.encode()).hexdigest()


def minted(secret):
    """`secret`, just made, once every one of SECRET_OBSERVERS has seen it."""
    for observer in SECRET_OBSERVERS:
        observer(secret)
    return secret


# What no text a person sets (a name, a handle, an email address, a login, a password) may
# hold, by Unicode general category, with what to tell them. These are invisible (format
# characters: a right-to-left override makes "alice\u202etxt.exe" read otherwise), break a line,
# a log or an email header (controls, line and paragraph separators), show differently on every
# device (private use), mean nothing yet (unassigned, in the Unicode version Python knows), or
# are no character at all: a lone surrogate cannot be written as UTF-8, so neither database
# can store it.
REFUSED_CHARACTERS = {
    'Cc': 'Remove line breaks and other control characters ({}).',
    'Zl': 'Remove line breaks and other control characters ({}).',
    'Zp': 'Remove line breaks and other control characters ({}).',
    'Cf': 'Remove invisible formatting characters ({}).',
    'Co': 'Remove {}: private-use characters look different on every device.',
    'Cn': 'Remove {}: it is not a character in Unicode ' + unicodedata.unidata_version + '.',
    'Cs': 'Remove {}: it is half of a character (a lone surrogate), not a character.',
}
# Format characters that text needs: zero-width joiners make emoji sequences (a family, a
# profession, a rainbow flag) and, with non-joiners, are part of spelling in Persian and the
# Indic scripts.
JOINERS = frozenset('\u200c\u200d')
# The flag of a region (Scotland, Wales) is a black flag followed by invisible tag characters;
# tag characters anywhere else could carry hidden text, so only this sequence keeps them.
FLAG_TAG_SEQUENCE = re.compile('\U0001F3F4[\U000E0020-\U000E007E]+\U000E007F')


def text_problem(value):
    """What to tell a person about the first character of `value` that no text they set
    may hold (see REFUSED_CHARACTERS), or None when there is none."""
    for character in FLAG_TAG_SEQUENCE.sub('', value):
        message = REFUSED_CHARACTERS.get(unicodedata.category(character))
        if message and character not in JOINERS:
            return message.format(f'U+{ord(character):04X}')
    return None


class Invalid(Exception):
    """Input broke a rule; `errors` maps each field to a message a person can act on."""

    def __init__(self, errors):
        super().__init__(errors)
        self.errors = errors


class Refused(Exception):
    """A request that is well-formed but cannot be done now (a limit, a used code)."""


class NotVerified(Refused):
    """A CLI login request that the user has not verified in the browser yet."""


class WrongCode(Refused):
    """A wrong CLI login code; `attempts_left` says how many tries remain (0: it has ended)."""

    def __init__(self, message, attempts_left):
        super().__init__(message)
        self.attempts_left = attempts_left


class BaseModel(PreparedModel):
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
    avatar_version = IntegerField(default=1)  # in the avatar's URL, so a new one busts caches

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

    @classmethod
    def sign_up(cls, email, handle, password, ip=None):
        """Create an account with its preferences; raises Invalid with every broken rule."""
        email = (email or '').strip().lower()
        handle = (handle or '').strip().lower()
        password = password or ''
        errors = {}
        if len(email) > EMAIL_MAX or not EMAIL_RE.match(email):
            errors['email'] = 'Enter an email address like name@example.com.'
        elif problem := text_problem(email):
            errors['email'] = problem
        if not HANDLE_RE.match(handle):
            errors['handle'] = text_problem(handle) or 'A handle is ' + HANDLE_RULES
        elif handle in RESERVED_HANDLES:
            errors['handle'] = RESERVED
        if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
            errors['password'] = (f'Use {PASSWORD_MIN} to {PASSWORD_MAX} characters.')
        elif problem := text_problem(password):
            errors['password'] = problem
        if errors:
            raise Invalid(errors)
        with write_transaction():
            if cls.select().where(cls.email == email).exists():
                errors['email'] = 'An account with this email already exists. Log in instead.'
            problem = handle_problem(handle)
            if problem:
                errors['handle'] = problem
            if errors:
                raise Invalid(errors)
            try:
                user = cls.create(email=email, handle=handle,
                                  password_hash=generate_password_hash(password))
            except IntegrityError:
                raise Invalid({'handle': 'This handle or email is taken.'}) from None
            Preferences.create(user=user)
            Avatar.create(user=user, seed=secrets.token_hex(16), updated_at=utcnow())
            AuditRecord.write('user.signup', user, ip, target=user)
        return user

    @classmethod
    def sign_up_with_session(cls, email, handle, password, ip, user_agent):
        """Sign up (raises Invalid) and open the new account's first browser session, in one
        transaction: if the session cannot be stored, no account is left behind either.
        Returns the Session; its `user` is the new account."""
        with write_transaction():
            user = cls.sign_up(email, handle, password, ip)
            return Session.sign_in(user, ip, user_agent)

    @classmethod
    def named(cls, login):
        """The user whose email or handle `login` is (already normalised), or None. A login
        no account can have (too long, or holding a character no email or handle may) is
        None without a query: PostgreSQL would refuse to compare with a NUL or a surrogate."""
        if len(login) > EMAIL_MAX or text_problem(login):
            return None
        return cls.get_or_none((cls.email if '@' in login else cls.handle) == login)

    @classmethod
    def authenticate(cls, login, password, ip=None):
        """The user whose email or handle is `login` and whose password matches, or None
        (a wrong password for an existing account writes `user.login.failed`)."""
        user = cls.named((login or '').strip().lower())
        if user is None:
            check_password_hash(_DUMMY_HASH, password or '')
            return None
        if not check_password_hash(user.password_hash, password or ''):
            AuditRecord.write('user.login.failed', user, ip, target=user)
            return None
        return user

    def handle_change_problem(self, handle):
        """Why this user cannot take `handle` (already normalised), or None."""
        if handle == self.handle:
            return 'This is already your handle.'
        if not HANDLE_RE.match(handle):
            return text_problem(handle) or 'A handle is ' + HANDLE_RULES
        return handle_problem(handle, self)

    def change_handle(self, handle, ip=None):
        """Take a new handle (raises Invalid): the old one is held for this user for
        HANDLE_HOLD, every workspace host follows, and `user.update` records both."""
        handle = (handle or '').strip().lower()
        with write_transaction():
            problem = self.handle_change_problem(handle)
            if problem:
                raise Invalid({'handle': problem})
            old, now = self.handle, utcnow()
            HandleHold.delete().where(HandleHold.handle == handle).execute()  # reclaimed
            HandleHold.hold(old, self, now)
            try:
                User.update(handle=handle, updated_at=now, version_id=User.version_id + 1
                            ).where(User.id == self.id).execute()
            except IntegrityError:
                raise Invalid({'handle': TAKEN}) from None
            self.handle, self.updated_at = handle, now
            self.version_id = User.select(User.version_id).where(User.id == self.id).scalar()
            AuditRecord.write('user.update', self, ip, target=self,
                              data={'handle': {'old': old, 'new': handle}})

    def delete_account(self):
        """Remove the account and every row that belongs to it, in one transaction. The email
        address is free at once; the handle is held (for nobody) for HANDLE_HOLD."""
        now = utcnow()
        with write_transaction():
            HandleHold.hold(self.handle, None, now)
            # Foreign keys cascade from the user row; these rows only name the user by id.
            AuditRecord.delete().where((AuditRecord.actor_id == self.id)
                                       | (AuditRecord.target_id == self.id)).execute()
            User.delete().where(User.id == self.id).execute()

    def set_display_name(self, value, ip=None):
        """Validate and save a new display name, writing `user.update` when it changes."""
        value = (value or '').strip()
        if not value:
            raise Invalid({'display_name': 'Enter a display name.'})
        if len(value) > DISPLAY_NAME_MAX:
            raise Invalid({'display_name':
                           f'Use at most {DISPLAY_NAME_MAX} characters (this is {len(value)}).'})
        if problem := text_problem(value):
            raise Invalid({'display_name': problem})
        if value == self.display_name:
            return False
        # Only the name's columns are written: saving the whole row read at the start of the
        # request would undo a handle or avatar change made meanwhile by another request.
        with write_transaction():
            old = locked(User.select(User.display_name).where(User.id == self.id)).scalar()
            if value == old:
                return False
            now = utcnow()
            User.update(display_name=value, updated_at=now, version_id=User.version_id + 1
                        ).where(User.id == self.id).execute()
            self.display_name, self.updated_at = value, now
            self.version_id = User.select(User.version_id).where(User.id == self.id).scalar()
            AuditRecord.write('user.update', self, ip, target=self,
                              data={'display_name': {'old': old, 'new': value}})
        return True


RESERVED = 'This handle is reserved. Choose another.'
TAKEN = 'This handle is taken. Choose another.'


def handle_problem(handle, user=None):
    """Why `handle` (well-formed, lowercase) cannot be taken by `user` (None: a new
    account), or None: reserved, in use, or let go less than HANDLE_HOLD ago by someone
    else (its old owner may take it back)."""
    if handle in RESERVED_HANDLES:
        return RESERVED
    if User.select().where(User.handle == handle).exists():
        return TAKEN
    hold = HandleHold.get_or_none(HandleHold.handle == handle, HandleHold.until > utcnow())
    if hold is not None and (user is None or hold.user_id != user.id):
        return ('This handle was in use until recently and cannot be taken until '
                f'{hold.until:%Y-%m-%d}. Choose another.')
    return None


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
        preferences = cls.prepared_get(cls.user, user)
        if preferences is None:
            raise cls.DoesNotExist(f'no preferences for {user}')
        return preferences

    @classmethod
    def change(cls, user, values, ip=None):
        """Set each named switch of `user`'s preferences and audit what changed; returns the
        preferences as stored now.

        The row is read under the write lock and changed from what it holds then, so a
        switch changed meanwhile by another request keeps its new value."""
        with write_transaction():
            current = cls.prepared_get(cls.user, user.id, lock=True)
            changed = {name: {'old': getattr(current, name), 'new': bool(on)}
                       for name, on in values.items() if getattr(current, name) != bool(on)}
            if changed:
                for name, diff in changed.items():
                    setattr(current, name, diff['new'])
                current.updated_at = utcnow()
                current.version_id += 1
                current.prepared_save()
                AuditRecord.write('user.preferences.update', user, ip, target=user,
                                  data={'communication_' + n: 'enabled' if d['new'] else
                                        'disabled' for n, d in changed.items()})
        return current


class Session(BaseModel):
    """One browser login. The cookie carries a secret whose hash is `token_hash`."""
    id = CharField(primary_key=True, default=lambda: new_id('s'))
    user = ForeignKeyField(User, backref='sessions', on_delete='CASCADE')
    token_hash = CharField(unique=True)
    created_at = DateTimeField(default=utcnow)
    last_seen_at = DateTimeField(default=utcnow)
    ip = CharField(null=True)
    user_agent = TextField(null=True)
    authenticated_at = DateTimeField(null=True)  # when the password was last typed in it

    secret = None  # set only on the instance that was just opened
    touched = False  # set by lookup() when it moved last_seen_at on

    def works(self):
        """True: requests may act by a session while its row is there (see database.act_as);
        its idle and age limits are checked once a request, by lookup()."""
        return True

    @property
    def recently_authenticated(self):
        """True when the password was typed in this session within RECENT_LOGIN."""
        return utcnow() - (self.authenticated_at or self.created_at) <= RECENT_LOGIN

    def reauthenticate(self, password, ip=None):
        """Check the user's password again; True (and the session is recent) when right,
        False and `user.login.failed` (naming this session) when wrong."""
        user = User.get_by_id(self.user_id)
        if not check_password_hash(user.password_hash, password or ''):
            AuditRecord.write('user.login.failed', user, ip, target=user,
                              data={'session_id': self.id})
            return False
        self.authenticated_at = utcnow()
        Session.update(authenticated_at=self.authenticated_at).where(
            Session.id == self.id).execute()
        return True

    @classmethod
    def for_user(cls, user):
        """The user's live browser sessions, most recently active first."""
        return list(cls.select().where(cls.user == user)
                    .order_by(cls.last_seen_at.desc(), cls.id))

    @classmethod
    def revoke(cls, user, session_id, ip=None):
        """End one of `user`'s sessions (the row goes, so its cookie stops working);
        False when it is not theirs or already gone."""
        with write_transaction():
            gone = cls.delete().where(cls.id == session_id, cls.user == user).execute()
            if gone:
                AuditRecord.write('user.session.revoke', user, ip, target=user,
                                  data={'session_id': session_id})
        return bool(gone)

    @classmethod
    def sign_in(cls, user, ip, user_agent):
        """Start a session for `user` and write `user.login`."""
        secret = minted(secrets.token_urlsafe(32))
        with db.atomic():
            session = cls.create(user=user, token_hash=sha256(secret), ip=ip,
                                 user_agent=_printable((user_agent or '')[:USER_AGENT_MAX]),
                                 authenticated_at=utcnow())
            AuditRecord.write('user.login', user, ip, target=user,
                              data={'session_id': session.id})
        session.secret = secret
        return session

    @classmethod
    def lookup(cls, secret, max_idle, max_age):
        """The live session whose cookie secret this is, with its user, touched at most once
        a minute (then `touched` is True). One idle longer than `max_idle`, or opened longer
        than `max_age` ago however busy, has ended."""
        session = cls.prepared_get(cls.token_hash, sha256(secret), join=cls.user)
        if session is None:
            return None
        now = utcnow()
        if now - session.last_seen_at > max_idle or now - session.created_at > max_age:
            session.delete_instance()
            return None
        session.touched = now - session.last_seen_at > SESSION_TOUCH_EVERY
        if session.touched:
            cls.update(last_seen_at=now).where(cls.id == session.id).execute()
        session.secret = secret
        return session

    def sign_out(self, ip=None):
        """Log this session out: the row goes, so the cookie stops working everywhere."""
        with write_transaction():
            self.delete_instance()
            AuditRecord.write('user.logout', self.user, ip, target=self.user,
                              data={'session_id': self.id})


def _printable(text):
    """`text` without control characters (PostgreSQL refuses NUL in text, and a User-Agent
    is shown back on the Sessions list)."""
    return ''.join(c for c in text if unicodedata.category(c) != 'Cc')


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
        return cls.prepared_create(
            identity=identity, identity_handle=identity.handle, action_type=action_type,
            actor_id=actor.id, actor_handle=actor.handle,
            actor_display_name=actor.display_name, actor_ip=ip,
            target_id=getattr(target, 'id', None), target_handle=getattr(target, 'handle', None),
            data=json.dumps(data or {}, sort_keys=True))


class Avatar(BaseModel):
    """A user's avatar: the default (generated from `seed`, or found by Gravatar) and the
    custom one cropped from an upload, each as WebP at imaging.LARGE and imaging.SMALL px."""
    user = ForeignKeyField(User, primary_key=True, on_delete='CASCADE')
    seed = CharField()
    default_source = CharField(default='generated', constraints=[
        Check("default_source IN ('generated', 'gravatar')")])
    default_large = BlobField(null=True)
    default_small = BlobField(null=True)
    custom_large = BlobField(null=True)
    custom_small = BlobField(null=True)
    updated_at = DateTimeField(default=utcnow)

    @property
    def is_custom(self):
        return self.custom_large is not None

    @classmethod
    def has_custom(cls, user_id):
        """True when the user shows an avatar they uploaded rather than the default."""
        return cls.select().where(cls.user == user_id, cls.custom_large.is_null(False)).exists()

    @classmethod
    def for_user(cls, user_id):
        """The user's avatar row, made on first use for accounts older than avatars."""
        avatar = cls.get_or_none(cls.user == user_id)
        if avatar is None:
            with write_transaction():
                cls.insert(user=user_id, seed=secrets.token_hex(16),
                           updated_at=utcnow()).on_conflict_ignore().execute()
            avatar = cls.get(cls.user == user_id)
        return avatar

    def image(self, size):
        """The WebP bytes shown now at `size` (imaging.LARGE or imaging.SMALL)."""
        suffix = 'large' if size == imaging.LARGE else 'small'
        if self.is_custom:
            return bytes(getattr(self, 'custom_' + suffix))
        if self.default_large is None:  # drawn once, when first asked for
            self.default_large, self.default_small = imaging.generated(self.seed)
            type(self).update(default_large=self.default_large,
                              default_small=self.default_small).where(
                type(self).user == self.user_id, type(self).default_large.is_null()).execute()
        return bytes(getattr(self, 'default_' + suffix))

    @classmethod
    def set_custom(cls, user, images, ip=None):
        """Show `images` (large, small WebP) as the user's avatar; writes user.avatar.update."""
        with write_transaction():
            cls.for_user(user.id)
            cls.update(custom_large=images[0], custom_small=images[1],
                       updated_at=utcnow()).where(cls.user == user.id).execute()
            _new_avatar_version(user)
            AuditRecord.write('user.avatar.update', user, ip, target=user)

    @classmethod
    def reset(cls, user, ip=None):
        """Go back to the default avatar; writes user.avatar.delete. False if already there."""
        with write_transaction():
            changed = cls.update(custom_large=None, custom_small=None, updated_at=utcnow()).where(
                cls.user == user.id, cls.custom_large.is_null(False)).execute()
            if changed:
                _new_avatar_version(user)
                AuditRecord.write('user.avatar.delete', user, ip, target=user)
        return bool(changed)

    @classmethod
    def adopt_found(cls, user_id, images):
        """Make `images`, found for the user's email address, their default avatar."""
        with write_transaction():
            user = User.get_or_none(User.id == user_id)
            if user is None:  # the account went while the lookup ran
                return False
            cls.for_user(user_id)
            cls.update(default_source='gravatar', default_large=images[0],
                       default_small=images[1], updated_at=utcnow()).where(
                cls.user == user_id).execute()
            _new_avatar_version(user)
        return True


def _new_avatar_version(user):
    """A new avatar URL for `user` (and a new version of the user object), in the database
    and on the object in hand."""
    now = utcnow()
    User.update(avatar_version=User.avatar_version + 1, version_id=User.version_id + 1,
                updated_at=now).where(User.id == user.id).execute()
    fresh = User.select(User.avatar_version, User.version_id).where(User.id == user.id).get()
    user.avatar_version, user.version_id, user.updated_at = (fresh.avatar_version,
                                                             fresh.version_id, now)


class AvatarUpload(BaseModel):
    """An uploaded original waiting for the crop step, with a working copy to show there.
    A user has at most one; it expires after AVATAR_UPLOAD_LIFETIME."""
    id = CharField(primary_key=True, default=lambda: new_id('au'))
    user = ForeignKeyField(User, on_delete='CASCADE')
    original = BlobField()
    preview = BlobField()
    width = IntegerField()
    height = IntegerField()
    preview_width = IntegerField()
    preview_height = IntegerField()
    created_at = DateTimeField(default=utcnow)
    expires_at = DateTimeField(index=True)

    @classmethod
    def start(cls, user, data):
        """Check `data` (raises imaging.BadImage) and keep it for the crop step, in place of
        the user's earlier pending upload; expired uploads of everyone are cleared."""
        inspected = imaging.inspect(data)
        now = utcnow()
        with write_transaction():
            cls.delete().where((cls.user == user.id) | (cls.expires_at <= now)).execute()
            return cls.create(user=user, original=data, preview=inspected.preview,
                              width=inspected.width, height=inspected.height,
                              preview_width=inspected.preview_width,
                              preview_height=inspected.preview_height,
                              created_at=now, expires_at=now + AVATAR_UPLOAD_LIFETIME)

    @classmethod
    def pending(cls, user, upload_id):
        """The user's unexpired upload `upload_id`, or None."""
        return cls.get_or_none(cls.id == upload_id, cls.user == user.id,
                               cls.expires_at > utcnow())

    def crop(self, user, x, y, size, ip=None):
        """Crop `user`'s avatar from the original (raises imaging.BadImage), show it, and
        let the upload go."""
        images = imaging.avatar(bytes(self.original), (x, y, size))
        with write_transaction():
            Avatar.set_custom(user, images, ip)
            self.delete_instance()

    def cancel(self):
        """Let the upload go without changing the avatar."""
        type(self).delete().where(type(self).id == self.id).execute()


class Token(BaseModel):
    """A user's API token. Only a hash of the secret is kept, and its last 4 characters.

    Each token sits in one of TOKEN_LIMIT slots, unique per user: the database itself
    refuses a third token, whatever races past the count in Token.issue."""
    id = CharField(primary_key=True, default=lambda: new_id('t'))
    user = ForeignKeyField(User, backref='tokens', on_delete='CASCADE')
    slot = IntegerField(constraints=[Check(f'slot BETWEEN 1 AND {TOKEN_LIMIT}')])
    token_hash = CharField(unique=True)
    last4 = CharField()
    status = CharField(default='active', constraints=[Check("status IN ('active', 'inactive')")])
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(null=True)
    last_used_at = DateTimeField(null=True)
    version_id = IntegerField(default=1)

    class Meta:
        indexes = ((('user', 'slot'), True),)

    # A secret is its prefix ('pst_', or 'pstt_' for a TemporaryToken), 30 random base62
    # characters, and the 6-character base62 CRC32 of all before it.
    ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase
    SECRET_RE = re.compile(r'^(pst|pstt)_[0-9A-Za-z]{36}$')

    @classmethod
    def _checksum(cls, body):
        number, digits = zlib.crc32(body.encode()), []
        for _ in range(6):
            number, digit = divmod(number, 62)
            digits.append(cls.ALPHABET[digit])
        return ''.join(reversed(digits))

    @classmethod
    def new_secret(cls, prefix):
        """A new secret starting with `prefix` (see SECRET_RE)."""
        body = prefix + ''.join(secrets.choice(cls.ALPHABET) for _ in range(30))
        return minted(body + cls._checksum(body))

    @classmethod
    def prefix_of(cls, secret):
        """'pst_' or 'pstt_' for a well-formed secret whose checksum holds, else None.

        Typos and junk are turned away here, before any database lookup."""
        match = cls.SECRET_RE.match(secret or '')
        if match is None:
            return None
        if not hmac.compare_digest(cls._checksum(secret[:-6]), secret[-6:]):
            return None
        return match.group(1) + '_'

    def works(self):
        """True while requests may act by this token (see database.act_as)."""
        return self.status == 'active'

    @property
    def masked(self):
        return f'pst_…{self.last4}'

    @classmethod
    def for_user(cls, user):
        return list(cls.select().where(cls.user == user).order_by(cls.created_at, cls.id))

    @classmethod
    def issue(cls, user, ip=None):
        """A new active token for `user`; returns (token, secret). Raises Refused at the limit."""
        refusal = (f'You already have {TOKEN_LIMIT} tokens, the most you can have at a time. '
                   'Delete one to create another.')
        secret = cls.new_secret('pst_')
        try:
            with write_transaction():
                used = {t.slot for t in cls.select(cls.slot).where(cls.user == user)}
                free = [slot for slot in range(1, TOKEN_LIMIT + 1) if slot not in used]
                if not free:
                    raise Refused(refusal)
                token = cls.create(user=user, slot=free[0], token_hash=sha256(secret),
                                   last4=secret[-4:])
                AuditRecord.write('token.create', user, ip, target=token,
                                  data={'token_id': token.id, 'last4': token.last4})
        except IntegrityError:
            raise Refused(refusal) from None
        return token, secret

    def set_status(self, status, ip=None):
        """Activate or deactivate; writes `token.update` when the status changes.

        Read again under the write lock, so a token deleted meanwhile is left alone."""
        if status not in ('active', 'inactive'):
            raise Invalid({'status': 'Status must be "active" or "inactive".'})
        with write_transaction():
            current = Token.get_or_none(Token.id == self.id)
            if current is None or current.status == status:
                return False
            old, self.status = current.status, status
            self.version_id = current.version_id
            self.updated_at = utcnow()
            self.version_id += 1
            self.save()
            AuditRecord.write('token.update', self.user, ip, target=self,
                              data={'token_id': self.id, 'last4': self.last4,
                                    'status': {'old': old, 'new': status}})
        return True

    def remove(self, ip=None):
        """Delete the token for good; writes `token.delete`."""
        with write_transaction():
            self.delete_instance()
            AuditRecord.write('token.delete', self.user, ip, target=self,
                              data={'token_id': self.id, 'last4': self.last4})


class TemporaryToken(BaseModel):
    """A token issued by CLI login; expires on its own. Only a hash of the secret is kept."""
    id = CharField(primary_key=True, default=lambda: new_id('p'))
    user = ForeignKeyField(User, backref='temporary_tokens', on_delete='CASCADE')
    token_hash = CharField(unique=True)
    created_at = DateTimeField(default=utcnow)
    expires_at = DateTimeField()
    last_used_at = DateTimeField(null=True)

    def works(self):
        """True until the token expires (see database.act_as)."""
        return self.expires_at > utcnow()


def bearer(secret):
    """The live Token or TemporaryToken (with its user loaded) for a bearer secret, or None."""
    prefix = Token.prefix_of(secret)
    if prefix is None:
        return None
    model = Token if prefix == 'pst_' else TemporaryToken
    row = (model.select(model, User).join(User)
           .where(model.token_hash == sha256(secret)).first())
    if row is None or not row.works():
        return None
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at > TOKEN_TOUCH_EVERY:
        model.update(last_used_at=now).where(model.id == row.id).execute()
        row.last_used_at = now
    return row


class LoginRequest(BaseModel):
    """A CLI asking to log in: confirmed in the browser, then exchanged once for a code."""
    id = CharField(primary_key=True, default=lambda: new_id('l'))
    ip = CharField(null=True)
    created_at = DateTimeField(default=utcnow)
    expires_at = DateTimeField()
    status = CharField(default='pending', constraints=[
        Check("status IN ('pending', 'confirmed', 'used', 'failed')")])
    # Its verifier: the first user to open it in the browser (see claim), before confirming.
    user = ForeignKeyField(User, null=True, backref='login_requests', on_delete='CASCADE')
    code_hash = CharField(null=True)
    attempts = IntegerField(default=0)

    @classmethod
    def start(cls, ip=None):
        """A new pending request. Expired ones are deleted in the same transaction: every row
        is born here, so sweeping here bounds the table whether or not any worker runs."""
        now = utcnow()  # one clock reading, so it expires exactly LOGIN_REQUEST_LIFETIME after
        with write_transaction(exclusive=False):
            cls.delete().where(cls.expires_at <= now).execute()
            return cls.create(ip=ip, created_at=now, expires_at=now + LOGIN_REQUEST_LIFETIME)

    @classmethod
    def open_request(cls, request_id):
        """The request if it can still be verified, declined or exchanged, else None."""
        request = cls.get_or_none(cls.id == request_id)
        if request is None or request.expires_at <= utcnow() \
                or request.status not in ('pending', 'confirmed'):
            return None
        return request

    @classmethod
    def claim(cls, request_id, user):
        """The open request for `user` to verify or decline. The first user to open a pending
        one becomes its verifier, so from then on it is None to everyone else, as a missing
        one is: no one else can decline it or take it over."""
        request = cls.open_request(request_id)
        if request is not None and request.user_id is None:
            cls.update(user=user).where((cls.id == request.id) & cls.user.is_null()).execute()
            request = cls.open_request(request_id)
        if request is None or request.user_id != user.id:
            return None
        return request

    def _code_hash(self, code):
        return sha256(f'{self.id}:{code}')

    def confirm(self, user, ip=None):
        """The user vouches for this request; returns the 6-digit code the CLI must send."""
        code = f'{secrets.randbelow(10 ** 6):06d}'
        with write_transaction():
            updated = (LoginRequest.update(status='confirmed', user=user,
                                           code_hash=self._code_hash(code))
                       .where((LoginRequest.id == self.id) & (LoginRequest.status == 'pending'))
                       .execute())
            if not updated:
                raise Refused('This login request was already answered.')
            AuditRecord.write('login_token.confirm', user, ip, target=user,
                              data={'login_request_id': self.id, 'requested_from': self.ip})
        return code

    def decline(self, user, ip=None):
        """The user disowns this request: it is deleted and can never issue a token."""
        with write_transaction():
            self.delete_instance()
            AuditRecord.write('login_token.decline', user, ip, target=user,
                              data={'login_request_id': self.id, 'requested_from': self.ip})

    def exchange(self, code, ip=None):
        """Trade the code for a temporary token secret, once. Wrong codes use up attempts."""
        wrong = None
        with write_transaction():
            # None: declined, or deleted by Reset authentication, since it was looked up.
            request = LoginRequest.get_or_none(LoginRequest.id == self.id)
            if request is not None and request.status == 'pending':
                raise NotVerified('This login request has not been verified in the browser '
                                  'yet.')
            if request is None or request.status != 'confirmed' \
                    or request.expires_at <= utcnow():
                raise Refused('This login request has expired or was already used.')
            if not hmac.compare_digest(request.code_hash, self._code_hash(code or '')):
                request.attempts += 1
                if request.attempts >= LOGIN_CODE_ATTEMPTS:
                    request.status = 'failed'
                request.save()  # kept: the wrong attempt must count
                left = LOGIN_CODE_ATTEMPTS - request.attempts
                wrong = WrongCode(
                    f'That code is wrong. {left} attempt{"s" if left != 1 else ""} left.'
                    if left else 'That code is wrong, and this login request has ended. '
                                 'Start again with a new one.', left)
            else:
                request.status = 'used'
                request.save()
                secret = Token.new_secret('pstt_')
                token = TemporaryToken.create(user=request.user_id, token_hash=sha256(secret),
                                              expires_at=utcnow() + TEMPORARY_TOKEN_LIFETIME)
                AuditRecord.write('login_token.create', request.user, ip, target=request.user,
                                  data={'login_request_id': self.id,
                                        'temporary_token_id': token.id})
        if wrong:
            raise wrong
        return secret


def reset_authentication(user, ip=None):
    """End every way in: browser sessions, temporary and user tokens, pending CLI logins."""
    with write_transaction():
        counts = {
            'sessions': Session.delete().where(Session.user == user).execute(),
            'temporary_tokens': TemporaryToken.delete()
            .where(TemporaryToken.user == user).execute(),
            'tokens': Token.delete().where(Token.user == user).execute(),
        }
        LoginRequest.delete().where(LoginRequest.user == user).execute()
        AuditRecord.write('user.authentication.reset', user, ip, target=user, data=counts)
    return counts


def audit_page(identity, limit, after=None, action_type=None):
    """One page of an account's audit log, newest first, after the (created_at, id) cursor.

    Keyset pagination on the (identity, created_at, id) index: page 1,000 costs what page 1
    does. Returns (records, cursor of the last record or None when there are no more)."""
    query = AuditRecord.select().where(AuditRecord.identity == identity)
    if action_type:
        query = query.where(AuditRecord.action_type == action_type)
    if after:
        query = query.where(Tuple(AuditRecord.created_at, AuditRecord.id) < Tuple(*after))
    records = list(query.order_by(AuditRecord.created_at.desc(), AuditRecord.id.desc())
                   .limit(limit + 1))
    more = len(records) > limit
    records = records[:limit]
    return records, ((records[-1].created_at, records[-1].id) if more else None)


class HandleHold(BaseModel):
    """A handle let go: only `user` (its old owner; None after deleting the account) may take
    it until `until`. The owner's old settings URLs redirect to the new handle meanwhile."""
    handle = CharField(primary_key=True)
    user = ForeignKeyField(User, null=True, backref='handle_holds', on_delete='SET NULL')
    released_at = DateTimeField(default=utcnow)
    until = DateTimeField(index=True)

    @classmethod
    def hold(cls, handle, user, now):
        """Hold `handle` for `user` (None: for nobody) from `now`, replacing any hold on it.
        An upsert rather than INSERT OR REPLACE, which only SQLite has."""
        (cls.insert(handle=handle, user=user, released_at=now, until=now + HANDLE_HOLD)
         .on_conflict(conflict_target=[cls.handle],
                      preserve=[cls.user, cls.released_at, cls.until]).execute())

    @classmethod
    def owner(cls, handle):
        """The user whose old handle `handle` is, while the hold lasts; else None."""
        hold = cls.get_or_none(cls.handle == handle, cls.until > utcnow(),
                               cls.user.is_null(False))
        return hold.user if hold else None


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


class Workspace(BaseModel):
    """A Postgres endpoint of a user's, reached at `host` with the user's database password."""
    id = CharField(primary_key=True, default=lambda: new_id('w'))
    user = ForeignKeyField(User, backref='workspaces', on_delete='CASCADE')
    handle = CharField()
    database_name = CharField(unique=True)
    password_version = IntegerField(default=0)  # the database password version it accepts
    password_applied_at = DateTimeField(null=True)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(null=True)
    version_id = IntegerField(default=1)

    class Meta:
        indexes = ((('user', 'handle'), True),)

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
        return 'applied' if self.password_version >= current_version else 'pending'

    @classmethod
    def for_user(cls, user):
        """The user's workspaces, oldest first."""
        return list(cls.select().where(cls.user == user).order_by(cls.created_at, cls.id))

    @classmethod
    def of(cls, user, workspace_id):
        """The user's workspace `workspace_id`, or None (someone else's is None too)."""
        return cls.get_or_none(cls.id == workspace_id, cls.user == user)

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
                raise Refused(f'You have {WORKSPACE_LIMIT} workspaces, the most an account '
                              'can have. Delete one to create another.')
            if cls.select().where(cls.user == user, cls.handle == handle).exists():
                raise Invalid({'handle': 'You already have a workspace with this handle.'})
            password = DatabasePassword.for_user(user)
            now = utcnow()
            workspace = cls.create(user=user, handle=handle, database_name=_database_name(),
                                   password_version=password.version, password_applied_at=now,
                                   created_at=now)
            AuditRecord.write('workspace.create', user, ip, target=workspace,
                              data={'workspace_id': workspace.id, 'handle': handle})
        return workspace

    def remove(self, ip=None):
        """Delete the workspace (its propagation jobs go with it); writes `workspace.delete`."""
        with write_transaction():
            self.delete_instance()
            AuditRecord.write('workspace.delete', self.user, ip, target=self,
                              data={'workspace_id': self.id, 'handle': self.handle})


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
