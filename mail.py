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
password set from inside a workspace, models.py for the handle and account deletion), and rendered by render() from templates/email/."""
import datetime
import json
import os

import jinja2
from peewee import CharField, Check, DateTimeField, IntegerField, TextField

from database import acting, skip_locked, write_transaction
from models import BaseModel, new_id, utcnow

MAIL_BACKOFF_MAX = 3600  # seconds between attempts at most
# Then a temporary failure counts as permanent: 2, 4 … 2048 s apart, then hourly, the last
# attempt about a day after the first (mail servers retry for days; a console's notices age).
MAIL_ATTEMPTS_MAX = 35
# The events that send a System email, by audit action (user.update only for a handle).
SYSTEM_EMAILS = ('token.create', 'user.password.rotate', 'user.handle.change',
                 'user.authentication.reset', 'login_token.confirm', 'user.delete',
                 'user.password.drift')


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
    """One message to send: `kind` (a SYSTEM_EMAILS name, or 'announcement'), its recipient,
    and `data` for its templates. `status` goes pending → sent, or failed for good (a
    permanent SMTP refusal, or MAIL_ATTEMPTS_MAX temporary ones)."""
    id = CharField(primary_key=True, default=lambda: new_id('m'))
    kind = CharField()
    user_id = CharField(null=True, index=True)  # no foreign key: `user.delete` outlives it
    to_address = CharField()
    data = TextField(default='{}')
    announcement_id = CharField(null=True)
    status = CharField(default='pending', constraints=[
        Check("status IN ('pending', 'sent', 'failed')")])
    attempts = IntegerField(default=0)
    run_after = DateTimeField(default=utcnow)
    locked_until = DateTimeField(null=True)
    last_error = TextField(null=True)
    created_at = DateTimeField(default=utcnow)
    sent_at = DateTimeField(null=True)

    class Meta:
        indexes = ((('status', 'run_after'), False),
                   (('announcement_id', 'user_id'), True))  # an announcement reaches one once

    @property
    def message_id(self):
        """The Message-ID header: the same for every attempt at this message."""
        return f'<{self.id}@{Config.domain}>'

    @property
    def values(self):
        return json.loads(self.data)

    @classmethod
    def queue(cls, kind, user, **data):
        """Queue System email `kind` to `user`'s address; call it inside the transaction of
        the event it tells of. `data` is what its templates say (never a secret)."""
        assert kind in SYSTEM_EMAILS, kind
        return cls.create(kind=kind, user_id=user.id, to_address=user.email,
                          data=json.dumps(data, sort_keys=True, default=str))

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
                                        cls.locked_until.is_null() | (cls.locked_until <= now))
                     .order_by(cls.run_after, cls.id).limit(limit))
            emails = list(skip_locked(query))
            if not emails:
                return []
            cls.update(locked_until=now + lease, attempts=cls.attempts + 1).where(
                cls.id.in_([email.id for email in emails])).execute()
        for email in emails:
            email.locked_until, email.attempts = now + lease, email.attempts + 1
        return emails

    def release(self):
        """Give back a leased message not yet tried: due again now, the attempt not counted."""
        Email.update(locked_until=None, attempts=Email.attempts - 1).where(
            Email.id == self.id, Email.locked_until == self.locked_until).execute()

    def sent(self):
        Email.update(status='sent', sent_at=utcnow(), locked_until=None, last_error=None).where(
            Email.id == self.id).execute()

    def failed(self, error, permanent=False):
        """Try again later (2, 4, 8 … s, at most MAIL_BACKOFF_MAX), or, when `permanent` or
        after MAIL_ATTEMPTS_MAX attempts, not at all. Returns whether it failed for good.
        `error` is kept as given: the caller says what may be kept (never a secret)."""
        final = permanent or self.attempts >= MAIL_ATTEMPTS_MAX
        delay = datetime.timedelta(seconds=min(2 ** self.attempts, MAIL_BACKOFF_MAX))
        Email.update(status='failed' if final else 'pending', locked_until=None,
                     last_error=str(error)[:500], run_after=utcnow() + delay).where(
            Email.id == self.id).execute()
        return final


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
    layouts there; an announcement's from announcements.py. A plain Jinja environment, not
    the app's: a worker renders with no request."""
    if email.kind == 'announcement':
        import announcements  # it builds on this module
        return (*announcements.content(email), announcements.headers(email))
    values = email.values
    handle = values['handle']
    context = dict(values, to_address=email.to_address, signup_url=link('auth.signup'),
                   reset_url=link('advanced.confirm_reset', handle=handle),
                   audit_url=link('audit.page', handle=handle),
                   when=datetime.datetime.fromisoformat(values['at']).strftime(
                       '%Y-%m-%d %H:%M UTC'))
    text = templates.get_template(f'email/{email.kind}.txt').make_module(context)
    html = templates.get_template(f'email/{email.kind}.html').render(
        context, subject=text.subject)
    return text.subject, str(text), html, dict(SYSTEM_HEADERS)
