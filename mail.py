"""Email that leaves Penstock: the outbox and what is queued in it.

A message is a row of the outbox (Email), written in the same transaction as the event that
causes it, so a change that is rolled back sends nothing and one that is committed always
sends. It holds what its templates need (`data`, never a secret), not the rendered text: a
worker (postman.py) renders and sends it off the request path, and leases it while it does,
so two workers never send one message. Its Message-ID is fixed when it is queued, so a
retry after a send that was not acknowledged is the same message to the receiver.

System emails (SYSTEM_EMAILS) go to the account's address whatever its preferences; an
announcement goes to each user who has its topic on when it is queued."""
import datetime
import json

from peewee import CharField, Check, DateTimeField, IntegerField, TextField

from database import skip_locked, write_transaction
from models import BaseModel, new_id, utcnow

MAIL_BACKOFF_MAX = 3600  # seconds between attempts at most
MAIL_ATTEMPTS_MAX = 12  # then a temporary failure counts as permanent (about 6 hours in all)
# The events that send a System email, by audit action (user.update only for a handle).
SYSTEM_EMAILS = ('token.create', 'user.password.rotate', 'user.handle.change',
                 'user.authentication.reset', 'login_token.confirm', 'user.delete')


class Config:
    """What the outbox needs from the app's configuration; create_app sets it."""
    domain = 'penstock.test'  # the right-hand side of every Message-ID
    public_url = 'http://127.0.0.1:5000'  # PUBLIC_URL: where the links in a message lead


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
    def claim(cls, lease):
        """Lease the next due message for `lease` (a timedelta), or None."""
        now = utcnow()
        with write_transaction(exclusive=False):  # on PostgreSQL: FOR UPDATE SKIP LOCKED
            query = (cls.select().where(cls.status == 'pending', cls.run_after <= now,
                                        cls.locked_until.is_null() | (cls.locked_until <= now))
                     .order_by(cls.run_after, cls.id).limit(1))
            email = skip_locked(query).first()
            if email is None:
                return None
            email.locked_until, email.attempts = now + lease, email.attempts + 1
            cls.update(locked_until=email.locked_until, attempts=email.attempts).where(
                cls.id == email.id).execute()
        return email

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
