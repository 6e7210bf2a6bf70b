"""How a person or a program proves who it is: browser sessions, API tokens and
the temporary tokens CLI login hands out, the CLI login requests themselves, and
Reset authentication, which ends them all. The accounts they belong to are in
models.py."""
import datetime
import hmac
import re
import secrets
import string
import unicodedata
import zlib

from peewee import (CharField, Check, DateTimeField, ForeignKeyField, IntegerField,
                    IntegrityError, TextField)
from werkzeug.security import check_password_hash

import addresses
from database import acting, db, write_transaction
from mail import Email
from models import (AuditRecord, BaseModel, Invalid, Owned, Refused, User, minted, new_id,
                    sha256, utcnow)


SESSION_TOUCH_EVERY = datetime.timedelta(minutes=1)
USER_AGENT_MAX = 512  # characters of a User-Agent kept with a session: enough to name it
TOKEN_LIMIT = 2
TOKEN_TOUCH_EVERY = datetime.timedelta(minutes=1)
TEMPORARY_TOKEN_LIFETIME = datetime.timedelta(days=30)
LOGIN_REQUEST_LIFETIME = datetime.timedelta(minutes=15)
LOGIN_CODE_ATTEMPTS = 3
# Dangerous actions need a password typed this recently in the session.
RECENT_LOGIN = datetime.timedelta(minutes=15)


# (pattern, name) in the order they must be tried: Edge and Opera also say "Chrome", Chrome
# also says "Safari", and so on.
BROWSERS = [
    (r'\bEdg(e|A|iOS)?/', 'Edge'), (r'\b(OPR|Opera)/', 'Opera'),
    (r'\bSamsungBrowser/', 'Samsung Internet'), (r'\bVivaldi/', 'Vivaldi'),
    (r'\b(Firefox|FxiOS)/', 'Firefox'), (r'\bHeadlessChrome/', 'Headless Chrome'),
    (r'\b(Chrome|CriOS)/', 'Chrome'), (r'\bChromium/', 'Chromium'),
    (r'\bVersion/[\d.]+.*\bSafari/', 'Safari'), (r'^curl/', 'curl'),
    (r'^python-(requests|urllib)', 'Python'), (r'^Werkzeug/', 'Werkzeug'),
]
SYSTEMS = [
    (r'\b(iPhone|iPad|iPod)\b', 'iOS'), (r'\bAndroid\b', 'Android'), (r'\bCrOS\b', 'ChromeOS'),
    (r'\bWindows\b', 'Windows'), (r'\bMac OS X\b|\bMacintosh\b', 'macOS'),
    (r'\bLinux\b|\bX11\b', 'Linux'),
]


def device(user_agent):
    """A short readable name for the browser a user agent string belongs to, such as
    'Chrome on Linux'; no library, since a rough name is all a person needs to recognise it."""
    user_agent = user_agent or ''
    browser = next((name for pattern, name in BROWSERS if re.search(pattern, user_agent)),
                   None)
    system = next((name for pattern, name in SYSTEMS if re.search(pattern, user_agent)), None)
    if browser and system:
        return f'{browser} on {system}'
    if browser or system:
        return browser or f'A browser on {system}'
    return 'Unknown device'


class NotVerified(Refused):
    """A CLI login request that the user has not verified in the browser yet."""


class WrongCode(Refused):
    """A wrong CLI login code; `attempts_left` says how many tries remain (0: it has ended)."""

    def __init__(self, message, attempts_left):
        super().__init__(message)
        self.attempts_left = attempts_left


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
    def described(self):
        """What a System email says an event came from when it acted by this session."""
        return device(self.user_agent)

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
    def sign_up(cls, email, handle, password, ip, user_agent):
        """Sign up (raises Invalid) and open the new account's first browser session, in one
        transaction: if the session cannot be stored, no account is left behind either.
        Returns the Session; its `user` is the new account. The email that verifies its
        address is queued too, unless that address had its hour's share already (the console
        then offers Resend verification email)."""
        with write_transaction():
            user = User.sign_up(email, handle, password, ip)
            try:
                addresses.ask_to_verify(user, ip)
            except addresses.TooSoon:
                pass  # signing up works all the same; the address's owner is spared more mail
            return cls.sign_in(user, ip, user_agent)

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


class Token(Owned):
    """A user's API token. Only a hash of the secret is kept, and its last 4 characters.

    Each token sits in one of TOKEN_LIMIT slots, unique per user: the database itself
    refuses a third token, whatever races past the count in Token.issue."""
    id = CharField(primary_key=True, default=lambda: new_id('t'))
    user = ForeignKeyField(User, backref='tokens', on_delete='CASCADE')
    slot = IntegerField(constraints=[Check(f'slot BETWEEN 1 AND {TOKEN_LIMIT}')])
    token_hash = CharField(unique=True)
    last4 = CharField()
    status = CharField(default='active', constraints=[Check("status IN ('active', 'inactive')")])
    last_used_at = DateTimeField(null=True)

    class Meta:
        indexes = ((('user', 'slot'), True),)

    STATUSES = ('active', 'inactive')
    DELETED = 'token.delete'
    # Why New Token is off at the limit, and why a token past it is refused.
    LIMIT_REACHED = (f'You already have {TOKEN_LIMIT} tokens, the most you can have at a time. '
                     'Delete one to create another.')

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

    @property
    def masked(self):
        return f'pst_…{self.last4}'

    @property
    def audit_data(self):
        """What every audit record of the token says of it."""
        return {'token_id': self.id, 'last4': self.last4}

    @classmethod
    def issue(cls, user, ip=None):
        """A new active token for `user`; returns (token, secret). Raises Refused at the limit."""
        secret = cls.new_secret('pst_')
        try:
            with write_transaction():
                used = {t.slot for t in cls.select(cls.slot).where(cls.user == user)}
                free = [slot for slot in range(1, TOKEN_LIMIT + 1) if slot not in used]
                if not free:
                    raise Refused(cls.LIMIT_REACHED)
                token = cls.create(user=user, slot=free[0], token_hash=sha256(secret),
                                   last4=secret[-4:])
                AuditRecord.write('token.create', user, ip, target=token, data=token.audit_data)
                Email.tell('token.create', user, ip, last4=token.last4)
        except IntegrityError:
            raise Refused(cls.LIMIT_REACHED) from None
        return token, secret

    def set_status(self, status, ip=None):
        """Activate or deactivate; writes `token.update` when the status changes.

        Read again under the write lock, so a token deleted meanwhile is left alone."""
        if status not in self.STATUSES:
            raise Invalid({'status': 'Status must be "active" or "inactive".'})
        with write_transaction():
            current = Token.get_or_none(Token.id == self.id)
            if current is None or current.status == status:
                return False
            old, self.status = current.status, status
            self.version_id, self.updated_at = current.version_id + 1, utcnow()
            self.save()
            AuditRecord.write('token.update', self.user, ip, target=self,
                              data={**self.audit_data, 'status': {'old': old, 'new': status}})
        return True

    def works(self):
        """True while requests may act by this token (see database.act_as)."""
        return self.status == 'active'

    @property
    def described(self):
        """What a System email says an event came from when it acted by this token."""
        return f'API token {self.masked}'


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

    @property
    def described(self):
        """What a System email says an event came from when it acted by this token."""
        return 'A CLI login token'


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

    # What the page and the API say of a request that open_request or claim gives as None.
    GONE = ('This login request does not exist, has expired or was already answered. '
            'Start a new one from the command line.')

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
        code = minted(f'{secrets.randbelow(10 ** 6):06d}')
        with write_transaction():
            updated = (LoginRequest.update(status='confirmed', user=user,
                                           code_hash=self._code_hash(code))
                       .where((LoginRequest.id == self.id) & (LoginRequest.status == 'pending'))
                       .execute())
            if not updated:
                raise Refused('This login request was already answered.')
            AuditRecord.write('login_token.confirm', user, ip, target=user,
                              data={'login_request_id': self.id, 'requested_from': self.ip})
            Email.tell('login_token.confirm', user, ip, requested_from=self.ip)
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


def reset_authentication(user, ip=None, **told):
    """End every way in: browser sessions, temporary and user tokens, pending CLI logins.
    `told` goes into the System email too (accounts.reset_authentication: the new database
    password's version)."""
    with write_transaction():
        credential = acting()  # named in the email, which is queued once it is gone
        counts = {
            'sessions': Session.delete().where(Session.user == user).execute(),
            'temporary_tokens': TemporaryToken.delete()
            .where(TemporaryToken.user == user).execute(),
            'tokens': Token.delete().where(Token.user == user).execute(),
        }
        LoginRequest.delete().where(LoginRequest.user == user).execute()
        AuditRecord.write('user.authentication.reset', user, ip, target=user, data=counts)
        Email.tell('user.authentication.reset', user, ip,
                   device=credential.described if credential else None, **counts, **told)
    return counts
