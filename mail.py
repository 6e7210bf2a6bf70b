"""Email that leaves Penstock: the outbox and what is queued in it.

A message is a row of the outbox (Email), written in the same transaction as the event that
causes it, so a change that is rolled back sends nothing and one that is committed always
sends. It holds what its templates need (`data`, never a secret), not the rendered text: a
worker (postman.py) renders and sends it off the request path, and leases it while it does,
so two workers never send one message. Its Message-ID is fixed when it is queued, so a
retry after a send that was not acknowledged is the same message to the receiver.

System emails (SYSTEM_EMAILS) go to the account's address whatever its preferences; an
announcement goes to each user who has its topic on when it is queued. Each System email is
queued by Email.tell where its event's audit record is written (credentials.py for tokens,
CLI logins and Reset authentication, workspaces.py for the database password, watch.py for a
password set from inside a workspace, models.py for the handle and account deletion), and
rendered by render() from templates/email/.

A flood to one address collapses, and nothing is lost: the first FLOOD_LIMIT System emails to
an address in the hour from the first (its FloodWindow) go as they come; each one after waits,
held by that hour's summary (an Email of kind SUMMARY, due when the hour ends), which lists
them all and is sent once in their place. Held messages are never claimed themselves; they
count as sent, or failed, with their summary. Announcements neither count nor wait: a person
turns them off with one click, and each is at most one message."""
import datetime
import json
import os

import jinja2
from peewee import BooleanField, CharField, Check, DateTimeField, IntegerField, TextField

from database import acting, db, locked, skip_locked, write_transaction
from models import BaseModel, User, new_id, utcnow, verification_token

MAIL_BACKOFF_MAX = 3600  # seconds between attempts at most
# Then a temporary failure counts as permanent: 2, 4 … 2048 s apart, then hourly, the last
# attempt about a day after the first (mail servers retry for days; a console's notices age).
MAIL_ATTEMPTS_MAX = 35
# The events that send a System email, by audit action (user.update only for a handle).
SYSTEM_EMAILS = ('token.create', 'user.password.rotate', 'user.handle.change',
                 'user.authentication.reset', 'login_token.confirm', 'user.delete',
                 'user.email.verify', 'user.email.update', 'user.password.drift')
# The one kind an address nobody has verified is sent: the link that verifies it. Every other
# message to an account whose address is not verified is held (Email.held) until it is.
VERIFY = 'user.email.verify'

# The flood rule: at most FLOOD_LIMIT System emails to one address go out in FLOOD_WINDOW; the
# rest go as one SUMMARY when it ends. A verification email (its own cap, 3 an hour) is not
# held back: it is the one an address needs to start getting mail at all.
FLOOD_LIMIT = 10
FLOOD_WINDOW = datetime.timedelta(hours=1)
FLOOD_EXEMPT = (VERIFY,)
SUMMARY = 'system.summary'

TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'templates')
# A System email says nothing of itself in its headers but that a program sent it (RFC 3834:
# no auto-replies to it); it has no List-Unsubscribe, since it cannot be turned off.
SYSTEM_HEADERS = {'Auto-Submitted': 'auto-generated'}


class Config:
    """What the outbox needs from the app's configuration; create_app sets it."""
    domain = 'penstock.test'  # the right-hand side of every Message-ID
    public_url = 'http://127.0.0.1:5000'  # where the links in messages lead (PUBLIC_URL)
    url_map = None  # the app's URL map: links are built without a request


class Email(BaseModel):
    """One message to send: `kind` (a SYSTEM_EMAILS name, SUMMARY or 'announcement'), its
    recipient, and `data` for its templates. `status` goes pending → sent, or failed for good (a
    permanent SMTP refusal, or MAIL_ATTEMPTS_MAX temporary ones)."""
    id = CharField(primary_key=True, default=lambda: new_id('m'))
    kind = CharField()
    user_id = CharField(null=True, index=True)  # no foreign key: `user.delete` outlives it
    to_address = CharField()
    data = TextField(default='{}')
    announcement_id = CharField(null=True)
    status = CharField(default='pending', constraints=[
        Check("status IN ('pending', 'sent', 'failed')")])
    # Queued while the account's address was not verified: not sent until it is (then
    # addresses.verify lets it go, to the verified address).
    held = BooleanField(default=False)
    attempts = IntegerField(default=0)
    run_after = DateTimeField(default=utcnow)
    locked_until = DateTimeField(null=True)
    last_error = TextField(null=True)
    created_at = DateTimeField(default=utcnow)
    sent_at = DateTimeField(null=True)
    summary_id = CharField(null=True, index=True)  # held in a flood: the summary that tells it

    class Meta:
        indexes = ((('status', 'run_after'), False),
                   (('announcement_id', 'user_id'), True),  # an announcement reaches one once
                   (('to_address', 'created_at'), False))  # verification emails per address

    @property
    def message_id(self):
        """The Message-ID header: the same for every attempt at this message."""
        return f'<{self.id}@{Config.domain}>'

    @property
    def values(self):
        return json.loads(self.data)

    @classmethod
    def queue(cls, kind, user, to_address=None, **data):
        """Queue System email `kind` to `user`'s address (or `to_address`); call it inside the
        transaction of the event it tells of. `data` is what its templates say (never a
        secret). Held while the account's address is not verified, but a verification email."""
        assert kind in SYSTEM_EMAILS, kind
        now = utcnow()
        held = kind != VERIFY and not User.select().where(
            User.id == user.id, User.email_verified_at.is_null(False)).exists()
        to_address = to_address or user.email
        summary = (None if kind in FLOOD_EXEMPT
                   else FloodWindow.count(user, to_address, held, now))
        return cls.create(kind=kind, user_id=user.id, to_address=to_address, held=held,
                          data=json.dumps(data, sort_keys=True, default=str),
                          summary_id=summary, created_at=now, run_after=now)

    @classmethod
    def tell(cls, kind, user, ip, device=None, **data):
        """Queue System email `kind` to `user` about an event of theirs happening now, with
        `data` (its facts), when it happened, its IP, the device it came from (the credential
        this request acts by, as it describes itself; pass `device` when the event ends that
        credential first) and the user's handle (for links)."""
        if device is None:
            credential = acting()
            device = credential.described if credential else None
        return cls.queue(kind, user, at=utcnow().isoformat(timespec='seconds'), ip=ip,
                         device=device, handle=user.handle, **data)

    @classmethod
    def claim(cls, lease, limit=1):
        """Lease the next due messages, at most `limit`, for `lease` (a timedelta); [] when
        none is due. Several at once spare a worker a transaction per message."""
        now = utcnow()
        with write_transaction(exclusive=False):  # on PostgreSQL: FOR UPDATE SKIP LOCKED
            query = (cls.select().where(cls.status == 'pending', cls.run_after <= now,
                                        cls.held == False,  # noqa: E712 (SQL, not Python)
                                        cls.locked_until.is_null() | (cls.locked_until <= now),
                                        cls.summary_id.is_null())
                     .order_by(cls.run_after, cls.id).limit(limit))
            emails = list(skip_locked(query))
            if not emails:
                return []
            cls.update(locked_until=now + lease, attempts=cls.attempts + 1).where(
                cls.id.in_([email.id for email in emails])).execute()
            FloodWindow.close([email.id for email in emails if email.kind == SUMMARY])
        for email in emails:
            email.locked_until, email.attempts = now + lease, email.attempts + 1
        return emails

    def release(self):
        """Give back a leased message not yet tried: due again now, the attempt not counted."""
        Email.update(locked_until=None, attempts=Email.attempts - 1).where(
            Email.id == self.id, Email.locked_until == self.locked_until).execute()

    def sent(self):
        """Record it sent, and a summary's held messages with it (in the one statement)."""
        which = Email.id == self.id
        if self.kind == SUMMARY:
            which |= Email.summary_id == self.id
        Email.update(status='sent', sent_at=utcnow(), locked_until=None, last_error=None).where(
            which).execute()

    def holds(self):
        """The messages this summary holds, oldest first."""
        return list(Email.select().where(Email.summary_id == self.id, Email.status == 'pending')
                    .order_by(Email.created_at, Email.id))

    def failed(self, error, permanent=False):
        """Try again later (2, 4, 8 … s, at most MAIL_BACKOFF_MAX), or, when `permanent` or
        after MAIL_ATTEMPTS_MAX attempts, not at all. Returns whether it failed for good.
        `error` is kept as given: the caller says what may be kept (never a secret)."""
        final = permanent or self.attempts >= MAIL_ATTEMPTS_MAX
        delay = datetime.timedelta(seconds=min(2 ** self.attempts, MAIL_BACKOFF_MAX))
        Email.update(status='failed' if final else 'pending', locked_until=None,
                     last_error=str(error)[:500], run_after=utcnow() + delay).where(
            Email.id == self.id).execute()
        if final:  # what a summary held fails with it
            Email.update(status='failed', last_error=str(error)[:500]).where(
                Email.summary_id == self.id, Email.status == 'pending').execute()
        return final


class FloodWindow(BaseModel):
    """The flood rule's count for one address (lowercased): how many System emails to it have
    gone out since `started_at`, and the summary (an Email) holding the ones after the first
    FLOOD_LIMIT until FLOOD_WINDOW from `started_at` is over."""
    address = CharField(primary_key=True)
    started_at = DateTimeField()
    sent = IntegerField(default=0)
    summary_id = CharField(null=True)

    @classmethod
    def count(cls, user, to_address, held, now):
        """Count a System email to `user` at `to_address` queued `now`: None when it may go now,
        else the id of the summary that holds it (itself `held` while the account's address is
        not verified). Inside the event's transaction, with the window's row locked, so
        simultaneous events to one address count one after another."""
        address = to_address.lower()
        with db.atomic():
            cls.insert(address=address, started_at=now).on_conflict_ignore().execute()
            window = locked(cls.select().where(cls.address == address)).get()
            if window.started_at <= now - FLOOD_WINDOW:
                window.started_at, window.sent, window.summary_id = now, 0, None
            elif window.summary_id and not Email.select().where(
                    Email.id == window.summary_id).exists():
                window.summary_id = None  # deleted with its account: the account's last word
            summary = None
            if window.sent < FLOOD_LIMIT:
                window.sent += 1
            else:
                if window.summary_id is None:
                    window.summary_id = Email.create(
                        kind=SUMMARY, user_id=user.id, to_address=to_address, held=held,
                        created_at=now, data=json.dumps({'handle': user.handle}),
                        run_after=window.started_at + FLOOD_WINDOW).id
                summary = window.summary_id
            window.save()
            return summary

    @classmethod
    def close(cls, summaries):
        """No more joins the summaries `summaries` (ids): they are being sent. Waits for an
        event counting into one of them to commit, so what a summary lists is settled once
        it is claimed; a later one starts a summary of its own."""
        if summaries:
            cls.update(summary_id=None).where(cls.summary_id.in_(summaries)).execute()


# The one environment every message is rendered in (a worker renders with no request).
templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=jinja2.select_autoescape(['html']),
    undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    keep_trailing_newline=True)


def link(endpoint, **values):
    """The absolute URL of `endpoint` with `values`, under Config.public_url."""
    return Config.public_url.rstrip('/') + Config.url_map.bind('').build(endpoint, values)


def render(email):
    """What `email` says: (subject, plain text, HTML, extra headers). A System email's come
    from templates/email/<kind>.txt (which sets `subject`) and <kind>.html, around the
    layouts there (a summary lists what it holds); an announcement's from announcements.py.
    A plain Jinja environment, not the app's: a worker renders with no request."""
    if email.kind == 'announcement':
        import announcements  # it builds on this module
        return (*announcements.content(email), announcements.headers(email))
    if email.kind == SUMMARY:
        notices = [dict(notice.values, when=_when(notice.values['at']),
                        subject=_text(notice, _context(notice, notice.values)).subject)
                   for notice in email.holds()]
        # The handle as the latest notice has it (one of them may have changed it).
        values = dict(email.values, **({'handle': notices[-1]['handle']} if notices else {}))
        first, last = (notices[0]['when'], notices[-1]['when']) if notices else (None, None)
        context = dict(_context(email, values), notices=notices, limit=FLOOD_LIMIT,
                       ip=None, device=None,
                       when=first if first == last else f'{first} to {last}')
    else:
        context = _context(email, email.values)
    text = _text(email, context)
    html = templates.get_template(f'email/{email.kind}.html').render(
        context, subject=text.subject)
    return text.subject, str(text), html, dict(SYSTEM_HEADERS)


def _context(email, values):
    """What a System email's templates read: its `values` and the links in it."""
    handle = values['handle']
    if email.kind == VERIFY:  # signed now, so its 24 hours start when it is sent
        values = dict(values, verify_url=link('auth.verify_email', t=verification_token(
            email.user_id, email.to_address)))
    return dict(values, to_address=email.to_address, signup_url=link('auth.signup'),
                reset_url=link('advanced.confirm_reset', handle=handle),
                audit_url=link('audit.page', handle=handle), when=_when(values.get('at')))


def _text(email, context):
    """The plain-text part of System email `email` as a template module (its `subject`)."""
    return templates.get_template(f'email/{email.kind}.txt').make_module(context)


def _when(at):
    return at and datetime.datetime.fromisoformat(at).strftime('%Y-%m-%d %H:%M UTC')
