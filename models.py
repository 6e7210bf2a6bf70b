"""The Peewee models of Penstock's accounts and the rules that belong to them:
people (User, their Preferences, Avatar and handle holds) and the audit log, and
what every model shares (ids, times, the text rule, Invalid and Refused, keyset
paging, Owned). Sessions, tokens and CLI login are in credentials.py, workspaces
and their database password in workspaces.py, and the engine room under them all
(connections, write locks, prepared SQL, encryption) in database.py."""
import base64
import datetime
import hashlib
import json
import re
import secrets
import unicodedata
from typing import NamedTuple

from email_validator import EmailNotValidError, validate_email
from itsdangerous import BadData, SignatureExpired, URLSafeTimedSerializer
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
from database import PreparedModel, db, locked, write_transaction
from workspace_servers import Servers

HANDLE_RE = re.compile(r'^[a-z0-9]([a-z0-9]|-(?=[a-z0-9])){0,38}$')
HANDLE_RULES = ('1–39 lowercase letters, digits or single hyphens; '
                'starts and ends with a letter or digit.')
EMAIL_MAX = 254
EMAIL_TAKEN = 'An account with this email already exists. Log in instead.'
# A link to verify an address (at sign-up, or the new one of Change email) works this long.
VERIFY_LINK_LIFETIME = datetime.timedelta(hours=24)
PASSWORD_MIN, PASSWORD_MAX = 8, 128
DISPLAY_NAME_MAX = 100
ID_ALPHABET = '0123456789abcdefghijklmnopqrstuv'
AVATAR_UPLOAD_LIFETIME = datetime.timedelta(hours=1)
CROP_FIELDS = ('x', 'y', 'size')
WHOLE_PIXELS = re.compile(r'-?[0-9]{1,9}')  # ASCII digits: int() would take '٥' and '1_0'
CROP_NOT_WHOLE = 'Enter whole numbers of pixels for x, y and size.'
CROP_NOT_TOGETHER = 'Send x, y and size together, or none of them for the centred square.'
# A handle someone let go (by changing it or deleting the account) is theirs alone this long.
HANDLE_HOLD = datetime.timedelta(days=30)
RESERVED_HANDLES = frozenset({
    'about', 'account', 'accounts', 'admin', 'administrator', 'api', 'app', 'assets', 'auth',
    'billing', 'blog', 'cli', 'console', 'dashboard', 'db', 'dns', 'docs', 'help', 'login',
    'logout', 'mail', 'me', 'new', 'org', 'penstock', 'postgres', 'reauth', 'root', 'security',
    'settings', 'signup', 'static', 'status', 'support', 'system', 'user', 'users', 'workspace',
    'workspaces', 'www',
    # A handle is a role on the workspace servers: none of the servers' own roles or names.
    'pg', 'public', 'none', 'template0', 'template1', 'replication', 'superuser',
})
# Checked against when the login is unknown, so a miss costs as much as a wrong password.
_DUMMY_HASH = generate_password_hash(secrets.token_urlsafe(16))
# Called with each secret as it is made (a token's, a session cookie's, a database password),
# before it is handed out or could reach a log line: the test suite registers one here and
# checks that no log record ever holds what it was given.
SECRET_OBSERVERS = []


class Config:
    """What the models need from the app's configuration; create_app sets it."""
    workspace_domain = 'workspaces.penstock.test'
    workspace_servers = Servers()  # where workspaces are placed; create_app configures them
    password_hash_method = 'scrypt'  # werkzeug's generate_password_hash method
    secret_key = None  # SECRET_KEY: links that verify an email address are signed with it


def utcnow():
    """The current time in UTC, naive, as the database stores it."""
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def day(value):
    """A date as the console writes dates ("Jan 1, 2027"), not ISO."""
    return f'{value:%b} {value.day}, {value.year}'


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


def normalised_email(value):
    """The one form `value`, an email address a person typed, is stored and compared in, or
    Invalid({'email': …}) saying what is wrong with it. email-validator checks it is one mailbox
    (a list, a comment, a display name or a quoted local part is refused), with no DNS lookup;
    `.test` domains are allowed (test_environment), other special-use ones (.local, .invalid,
    localhost) are not. The stored form is its ASCII one (an internationalised domain as
    punycode: every SMTP server takes it, and both spellings compare equal), lowercased: two
    addresses that differ only in case are one address here."""
    value = (value or '').strip()
    if not value:
        raise Invalid({'email': 'Enter your email address, like name@example.com.'})
    if problem := text_problem(value):
        raise Invalid({'email': problem})
    try:
        checked = validate_email(value, check_deliverability=False, test_environment=True,
                                 allow_smtputf8=False, allow_display_name=False,
                                 allow_quoted_local=False, allow_domain_literal=False)
    except EmailNotValidError as error:
        raise Invalid({'email': f'Enter one email address, like name@example.com. {error}'}
                      ) from None
    address = checked.ascii_email.lower()
    if len(address) > EMAIL_MAX:
        raise Invalid({'email': f'Use at most {EMAIL_MAX} characters '
                                f'(this is {len(address)}).'})
    return address


def _verification_signer():
    return URLSafeTimedSerializer(Config.secret_key, salt='verify-email')


def verification_token(user_id, address):
    """The token of a link that verifies `address` for the account `user_id`: signed, bound to
    both, and dated (see verification_claim). The whole token and its signature are handed to
    SECRET_OBSERVERS: the log tests split a line into words at its dots."""
    token = _verification_signer().dumps([user_id, address])
    minted(token.rpartition('.')[2])
    return minted(token)


def verification_claim(token):
    """(account id, address) that `token` was made for, 'expired' when it is older than
    VERIFY_LINK_LIFETIME, or None when it is no token of verification_token's (forged, altered,
    cut short)."""
    try:
        user_id, address = _verification_signer().loads(
            token or '', max_age=int(VERIFY_LINK_LIFETIME.total_seconds()))
    except SignatureExpired:  # signed by us, but too old
        return 'expired'
    except (BadData, TypeError, ValueError):
        return None
    if not (isinstance(user_id, str) and isinstance(address, str)):
        return None
    return user_id, address


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


class BaseModel(PreparedModel):
    class Meta:
        database = db
        legacy_table_names = False


class User(BaseModel):
    id = CharField(primary_key=True, default=lambda: new_id('u'))
    # Unique among verified accounts only (the partial index below): an address that only
    # unverified accounts hold is nobody's yet. Stored as normalised_email gives it.
    email = CharField(index=True)
    email_verified_at = DateTimeField(null=True)  # when the address was shown to be theirs
    new_email = CharField(null=True)  # asked for by Change email, not yet verified
    handle = CharField(unique=True)
    display_name = CharField(null=True)
    password_hash = CharField()
    status = CharField(default='accepted')
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(null=True)
    version_id = IntegerField(default=1)
    avatar_version = IntegerField(default=1)  # in the avatar's URL, so a new one busts caches
    email_undeliverable_at = DateTimeField(null=True)  # when mail to `email` failed for good

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
    def email_verified(self):
        """True once the account's address was shown to be theirs (see addresses.py)."""
        return self.email_verified_at is not None

    @classmethod
    def sign_up(cls, email, handle, password, ip=None):
        """Create an account with its preferences, its address not yet verified; raises
        Invalid with every broken rule. An address only unverified accounts hold is free."""
        handle = (handle or '').strip().lower()
        password = password or ''
        errors = {}
        try:
            email = normalised_email(email)
        except Invalid as invalid:
            errors.update(invalid.errors)
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
            if cls.verified_holder(email) is not None:
                errors['email'] = EMAIL_TAKEN
            problem = handle_problem(handle)
            if problem:
                errors['handle'] = problem
            if errors:
                raise Invalid(errors)
            try:
                user = cls.create(email=email, handle=handle,
                                  password_hash=generate_password_hash(
                                      password, method=Config.password_hash_method))
            except IntegrityError:
                raise Invalid({'handle': 'This handle or email is taken.'}) from None
            Preferences.create(user=user)
            Avatar.create(user=user, seed=secrets.token_hex(16), updated_at=utcnow())
            AuditRecord.write('user.signup', user, ip, target=user)
        return user

    @classmethod
    def verified_holder(cls, address):
        """The account that has verified `address` (normalised), or None."""
        return cls.get_or_none(cls.email == address, cls.email_verified_at.is_null(False))

    @classmethod
    def named(cls, login):
        """The user whose email or handle `login` is (lowercased), or None. A login no account
        can have (too long, or holding a character no email or handle may) is None without a
        query: PostgreSQL would refuse to compare with a NUL or a surrogate.

        An address reaches the account that verified it; when none has, the oldest account
        that signed up with it (the others log in by handle until they verify it)."""
        if len(login) > EMAIL_MAX or text_problem(login):
            return None
        if '@' not in login:
            return cls.get_or_none(cls.handle == login)
        try:
            login = normalised_email(login)
        except Invalid:
            return None
        return (cls.select().where(cls.email == login)
                .order_by(cls.email_verified_at.is_null(), cls.created_at, cls.id).first())

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

    def password_checked(self, password, ip=None):
        """The account's password hash, read afresh, when `password` matches it; else None and
        `user.login.failed`, as a wrong login writes. A write it authorizes passes the hash
        on (see delete_account), so a password changed meanwhile authorizes nothing."""
        stored = User.select(User.password_hash).where(User.id == self.id).scalar()
        if stored is None or not check_password_hash(stored, password or ''):
            if stored is not None:
                AuditRecord.write('user.login.failed', self, ip, target=self)
            return None
        return stored

    def handle_change_problem(self, handle):
        """Why this user cannot take `handle` (already normalised), or None."""
        if handle == self.handle:
            return 'This is already your handle.'
        if not HANDLE_RE.match(handle):
            return text_problem(handle) or 'A handle is ' + HANDLE_RULES
        return handle_problem(handle, self)

    def handle_lookup(self, handle):
        """(why this user cannot take `handle`, already normalised, or None; whether that
        answer tells that another account has or had it, which the throttle counts)."""
        problem = self.handle_change_problem(handle)
        telling = (problem is not None and handle != self.handle
                   and HANDLE_RE.match(handle) is not None and handle not in RESERVED_HANDLES)
        return problem, telling

    def change_handle(self, handle, ip=None):
        """Take a new handle (raises Invalid): the old one is held for this user for
        HANDLE_HOLD, every workspace host follows, `user.update` records both, and a System
        email tells the user which hosts changed."""
        import mail  # mail.py and workspaces.py build on this module
        import workspaces
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
            workspaces.PropagationJob.follow(self, 'user.update')  # the role is renamed
            AuditRecord.write('user.update', self, ip, target=self,
                              data={'handle': {'old': old, 'new': handle}})
            hosts = [(workspace.host(old), workspace.host(handle))
                     for workspace in workspaces.Workspace.for_user(self.id)]
            mail.Email.tell('user.handle.change', self, ip, old=old, new=handle, hosts=hosts)

    def update_profile(self, changes, ip=None):
        """Set the display name and the handle, each if `changes` names it (a display name
        of None or blank clears it), in one transaction: both change or neither (raises
        Invalid for the first one refused). The current handle changes nothing."""
        with write_transaction():
            if 'display_name' in changes:
                self.set_display_name(changes['display_name'], ip)
            handle = changes.get('handle')
            if handle is not None and handle.strip().lower() != self.handle:
                self.change_handle(handle, ip)

    def delete_account(self, ip=None, password_hash=None):
        """Remove the account and every row that belongs to it, in one transaction, but the
        System email that tells its address so, when verified, and the verification emails
        sent in the last hour (its other messages, sent or not, go). The email address is free
        at once; the handle is held (for nobody) for HANDLE_HOLD.

        `password_hash`, from password_checked(): the password was checked before the write
        lock was taken (a hash costs tens of milliseconds, too long to hold it), so inside the
        transaction the account's hash must still be that one, or nothing is deleted (raises
        Refused)."""
        import mail  # mail.py and workspaces.py build on this module
        import workspaces
        now = utcnow()
        with write_transaction():
            if password_hash is not None and locked(
                    User.select(User.password_hash).where(User.id == self.id)
            ).scalar() != password_hash:
                raise Refused(PASSWORD_CHANGED)
            workspaces.PropagationJob.follow(self, 'user.delete')  # databases and role go
            # The verification emails it was sent stay, nobody's, to count against their
            # address's hourly limit: deleting the account and signing up again with someone
            # else's address must not send it more. They stay as the outbox keeps sent mail.
            sent_links = ((mail.Email.kind == mail.VERIFY) & (mail.Email.status == 'sent')
                          & (mail.Email.created_at > now - datetime.timedelta(hours=1)))
            mail.Email.update(user_id=None).where(mail.Email.user_id == self.id,
                                                  sent_links).execute()
            mail.Email.delete().where(mail.Email.user_id == self.id).execute()
            # Queued while the session or token it acts by is there to be named; an address
            # never verified hears nothing (its held mail would wait for good).
            if self.email_verified:
                mail.Email.tell('user.delete', self, ip, workspaces=workspaces.Workspace.select()
                                .where(workspaces.Workspace.user == self.id).count())
            HandleHold.hold(self.handle, None, now)
            # Foreign keys cascade from the user row; these rows only name the user by id.
            AuditRecord.delete().where((AuditRecord.actor_id == self.id)
                                       | (AuditRecord.target_id == self.id)).execute()
            User.delete().where(User.id == self.id).execute()

    def set_display_name(self, value, ip=None):
        """Validate and save a new display name, writing `user.update` when it changes. An
        empty or blank one (or None) clears it: the console shows the handle instead."""
        value = (value or '').strip() or None
        if value is not None and len(value) > DISPLAY_NAME_MAX:
            raise Invalid({'display_name':
                           f'Use at most {DISPLAY_NAME_MAX} characters (this is {len(value)}).'})
        if value is not None and (problem := text_problem(value)):
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


# An address belongs to at most one verified account (SQLite and PostgreSQL both have partial
# indexes; migrations/0009_verified_email.py makes it).
User.add_index(User.index(User.email, unique=True, name='user_email_verified')
               .where(User.email_verified_at.is_null(False)))


RESERVED = 'This handle is reserved. Choose another.'
PASSWORD_CHANGED = 'The password changed while this was asked; nothing was deleted.'
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
                f'{day(hold.until)}. Choose another.')
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
    def change(cls, user, values, ip=None, via=None):
        """Set each named switch of `user`'s preferences and audit what changed (`via`:
        how, when not the Notifications page or the API: 'email' for an unsubscribe link);
        returns the preferences as stored now.

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
                data = {'communication_' + n: 'enabled' if d['new'] else 'disabled'
                        for n, d in changed.items()}
                if via:
                    data['via'] = via
                AuditRecord.write('user.preferences.update', user, ip, target=user, data=data)
                off = [name for name, diff in changed.items() if not diff['new']]
                if off:
                    import announcements  # announcements.py builds on this module
                    announcements.withdraw(user, off)
        return current


def keyset_page(query, limit, after=None, newest_first=False):
    """One page of `query`'s rows in (created_at, id) order, oldest first or `newest_first`,
    after the cursor `after`: the (created_at, id) of the last row of the page before.

    Keyset pagination: with an index ending in (created_at, id), page 1,000 costs what page 1
    does, and rows written meanwhile shift no page. Returns (rows, the cursor of the last row,
    or None when there are no more)."""
    model = query.model
    key = Tuple(model.created_at, model.id)
    if after:
        query = query.where(key < Tuple(*after) if newest_first else key > Tuple(*after))
    order = (model.created_at.desc(), model.id.desc()) if newest_first else (model.created_at,
                                                                             model.id)
    rows = list(query.order_by(*order).limit(limit + 1))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, ((rows[-1].created_at, rows[-1].id) if more else None)


class Owned(BaseModel):
    """A model whose rows each belong to one user (`user`), are listed oldest first, and are
    deleted with an audit record of type DELETED that holds their `audit_data`; each row is
    versioned (`version_id`, for the API's ETags). No table of its own: Token and Workspace
    inherit its fields."""
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(null=True)
    version_id = IntegerField(default=1)

    @classmethod
    def for_user(cls, user):
        """The user's rows, oldest first."""
        return list(cls.select().where(cls.user == user).order_by(cls.created_at, cls.id))

    @classmethod
    def page(cls, user, limit, after=None):
        """One keyset page of the user's rows, oldest first (see keyset_page)."""
        return keyset_page(cls.select().where(cls.user == user), limit, after)

    @classmethod
    def of(cls, user, row_id):
        """The user's row `row_id`, or None: someone else's is None too, so that a view
        answers both alike (404)."""
        return cls.get_or_none(cls.id == row_id, cls.user == user)

    def remove(self, ip=None):
        """Delete the row for good (with the rows that cascade from it); writes DELETED."""
        with write_transaction():
            self.delete_instance()
            AuditRecord.write(self.DELETED, self.user, ip, target=self, data=self.audit_data)


class AuditAction(NamedTuple):
    """An action type audit records are written with: what the Audit Log's filter calls it,
    and what a record of it says the actor did, after their handle.

    A sentence is a str.format template over the record's data, in the words the console's
    pages use, plus what views.audit words from the data: `{token}`, the token the data
    names by its last 4 characters; `{turned}` and `{unsubscribed}`, the Notifications
    switches it changed, by their labels; `{email}`, the System email it names. `variants`
    maps a condition on those values to the sentence it calls for instead, the first that
    holds winning: `key` holds when there is a value at `key`, `key.inner` when data[key] has
    one at `inner`, and `key.inner=value` when that value is `value`."""
    name: str
    label: str
    sentence: str
    variants: dict = {}

    def says(self, values):
        """The sentence a record of this action reads as, given `values`: its data and
        what is worded from it."""
        for condition, sentence in self.variants.items():
            path, _, wanted = condition.partition('=')
            value = values
            for key in path.split('.'):
                value = value.get(key) if isinstance(value, dict) else None
            if value is not None and value != '' and (not wanted or str(value) == wanted):
                return sentence
        return self.sentence


# Every action type the app writes, in the order the Audit Log's filter lists them. The
# filter, the sentences in the log and the OpenAPI document all read this list.
AUDIT_ACTIONS = {action.name: action for action in (
    AuditAction('user.signup', 'Signed up', 'signed up'),
    AuditAction('user.login', 'Logged in', 'logged in'),
    AuditAction('user.login.failed', 'Wrong password typed', 'failed to log in (wrong password)',
                {'session_id': 'failed to confirm their password (wrong password)'}),
    AuditAction('user.logout', 'Logged out', 'logged out'),
    AuditAction('user.update', 'Profile changed', 'updated their profile', {
        'display_name.new': 'changed their display name to “{display_name[new]}”',
        'display_name.old': 'cleared their display name',
        'handle.new': 'changed their handle from {handle[old]} to {handle[new]}'}),
    AuditAction('user.preferences.update', 'Notification preferences changed',
                'changed their notification preferences', {
                    'unsubscribed': 'unsubscribed from {unsubscribed} with the link in an email',
                    'via=email': 'unsubscribed with the link in an email',
                    'turned': 'turned {turned}'}),
    AuditAction('user.avatar.update', 'Avatar uploaded', 'uploaded a new avatar'),
    AuditAction('user.avatar.delete', 'Avatar reset', 'reset their avatar'),
    AuditAction('user.password.rotate', 'Database password rotated',
                'rotated their database password',
                {'end_connections': 'rotated their database password (version {version}) '
                                    'and ended the open connections to their workspaces',
                 'version': 'rotated their database password (version {version})'}),
    AuditAction('user.password.drift', 'Database password put back',
                'had their database password changed inside a workspace; Penstock put it back'),
    AuditAction('user.session.revoke', 'Session revoked', 'revoked another browser session'),
    AuditAction('workspace.create', 'Workspace created', 'created workspace {handle}'),
    AuditAction('workspace.delete', 'Workspace deleted', 'deleted workspace {handle}'),
    AuditAction('token.create', 'Token created', 'created {token}'),
    AuditAction('token.update', 'Token activated or deactivated', 'changed {token}', {
        'status.new=inactive': 'deactivated {token}', 'status.new=active': 'activated {token}'}),
    AuditAction('token.delete', 'Token deleted', 'deleted {token}'),
    AuditAction('user.authentication.reset', 'Authentication reset',
                'reset authentication, logging out every session and revoking every token'),
    AuditAction('login_token.confirm', 'CLI login verified', 'verified a CLI login request',
                {'requested_from': 'verified a CLI login request from {requested_from}'}),
    AuditAction('login_token.decline', 'CLI login declined', 'declined a CLI login request',
                {'requested_from': 'declined a CLI login request from {requested_from}'}),
    AuditAction('login_token.create', 'CLI login completed',
                'logged in with the CLI (a temporary token was issued)'),
    AuditAction('user.email.update', 'Email change requested',
                'asked to change their email address',
                {'address.new': 'asked to change their email address to {address[new]}'}),
    AuditAction('user.email.verify', 'Email address verified', 'verified their email address',
                {'replaced': 'changed their email address from {replaced} to {address}',
                 'address': 'verified their email address {address}'}),
    AuditAction('email.failed', 'Email undeliverable', 'could not be sent {email}', {
        'code': 'could not be sent {email} (their mail server answered {code})'}),
)}


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

    @classmethod
    def page(cls, identity, limit, after=None, action_type=None):
        """One keyset page of an account's audit log, newest first, of one `action_type` or
        of all (see keyset_page; the (identity, created_at, id) index serves it)."""
        query = cls.select().where(cls.identity == identity)
        if action_type:
            query = query.where(cls.action_type == action_type)
        return keyset_page(query, limit, after, newest_first=True)

    @staticmethod
    def actors(records):
        """The users who acted in `records` that still exist, by id, in one query: their
        ids and avatar versions, for their avatars' URLs."""
        ids = {record.actor_id for record in records if record.actor_id}
        if not ids:
            return {}
        return {user.id: user for user in
                User.select(User.id, User.avatar_version).where(User.id.in_(ids))}


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

    @staticmethod
    def crop_box(fields, required=True):
        """The crop square (x, y, size) that the text `fields` x, y and size give, in the
        pixels of the image as shown; None, for the centred square, when none is given and
        the square is not `required` (the crop step always shows one; the API may leave it
        out). Raises Invalid at each field that is not a whole number of pixels, or missing
        while others are given. Whether the square lies inside the image is imaging's to say."""
        values = {name: (fields.get(name) or '').strip() for name in CROP_FIELDS}
        if not required and not any(values.values()):
            return None
        errors = {name: CROP_NOT_TOGETHER if not (value or required) else CROP_NOT_WHOLE
                  for name, value in values.items() if not WHOLE_PIXELS.fullmatch(value)}
        if errors:
            raise Invalid(errors)
        return tuple(int(value) for value in values.values())

    @classmethod
    def set_custom(cls, user, original, box=None, ip=None, upload=None):
        """Crop `user`'s avatar from the image `original` by `box` (see crop_box; raises
        imaging.BadImage or imaging.Busy) and show it; writes user.avatar.update. The
        AvatarUpload it came from, if any, goes in the same transaction."""
        large, small = imaging.avatar(original, box)  # decoded before the write lock is taken
        with write_transaction():
            cls.for_user(user.id)
            cls.update(custom_large=large, custom_small=small,
                       updated_at=utcnow()).where(cls.user == user.id).execute()
            _new_avatar_version(user)
            AuditRecord.write('user.avatar.update', user, ip, target=user)
            if upload is not None:
                upload.delete_instance()

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

    def crop(self, user, fields, ip=None):
        """Crop `user`'s avatar from the original by the square the text `fields` x, y and
        size give (raises Invalid, imaging.BadImage or imaging.Busy), show it, and let the
        upload go."""
        Avatar.set_custom(user, bytes(self.original), Avatar.crop_box(fields), ip, upload=self)

    def cancel(self):
        """Let the upload go without changing the avatar."""
        type(self).delete().where(type(self).id == self.id).execute()


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
