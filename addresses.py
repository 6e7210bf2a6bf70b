"""An account's email address once it has one: the email whose link verifies it (at most
VERIFY_EMAILS_PER_HOUR an hour), opening that link, and Change email.

Until an address is verified it is sent nothing but the verification email: the rest of the
account's System emails wait in the outbox (mail.Email.held) and go once it is verified, and
announcements are not queued to it at all. Addresses are unique among verified accounts only
(a partial unique index on user.email): the first account to verify one keeps it."""
import datetime

from database import write_transaction
from mail import VERIFY, Email
from models import (
    VERIFY_LINK_LIFETIME,
    AuditRecord,
    Invalid,
    Refused,
    User,
    normalised_email,
    utcnow,
    verification_claim,
)

VERIFY_EMAILS_PER_HOUR = 3  # to one account, and to one address whichever accounts ask
HOUR = datetime.timedelta(hours=1)
CHANGE_NOTICE = 'user.email.update'  # the System email that tells the old address
ADDRESS_TAKEN = 'Another account has verified this email address. Enter another.'

LINK_BROKEN = ('This verification link is not valid: it may have been cut short or changed. '
               'Open the link from the email again, or ask for a new one in the console.')
LINK_EXPIRED = (f'This verification link has expired (links work for '
                f'{int(VERIFY_LINK_LIFETIME.total_seconds() // 3600)} hours). '
                'Log in and ask for a new one.')
LINK_GONE = 'This verification link is for an account that no longer exists.'
LINK_STALE = ('This verification link is for an address this account no longer uses or asks '
              'for. Use the link in the newest email, or ask for a new one in the console.')
LINK_TAKEN = ('Another account has already verified this email address, so this account '
              'cannot use it. Log in and change your email on Profile.')


class TooSoon(Refused):
    """Another verification email would be more than VERIFY_EMAILS_PER_HOUR an hour; `until`
    is when one may be sent again."""

    def __init__(self, until):
        super().__init__(f'We have sent {VERIFY_EMAILS_PER_HOUR} verification emails in the '
                         f'last hour. You can ask for another at {until:%H:%M} UTC.')
        self.until = until

    @property
    def retry_after(self):
        """Whole seconds from now until `until` (for a Retry-After header)."""
        return max(1, int((self.until - utcnow()).total_seconds()) + 1)


class LinkRefused(Exception):
    """A verification link that verifies nothing: `message` says why, `status` is the HTTP
    status of the page that says so."""

    def __init__(self, message, status):
        super().__init__(message)
        self.message, self.status = message, status


def ask_to_verify(user, ip=None, address=None):
    """Queue the email whose link verifies `address` (the account's own by default) for
    `user`; call it inside a write transaction. Raises TooSoon after VERIFY_EMAILS_PER_HOUR in
    the last hour, to this account or to this address (so many accounts signed up with one
    person's address cannot flood it either)."""
    address = address or user.email
    now = utcnow()
    with write_transaction():
        until = max(_next_allowed(Email.user_id == user.id, now),
                    _next_allowed(Email.to_address == address, now))
        if until > now:
            raise TooSoon(until)
        return Email.tell(VERIFY, user, ip, to_address=address)


def _next_allowed(whose, now):
    """When the verification emails that `whose` selects allow another: now, or when the
    oldest of the last VERIFY_EMAILS_PER_HOUR of them is an hour old."""
    recent = [row.created_at for row in Email.select(Email.created_at).where(
        Email.kind == VERIFY, Email.created_at > now - HOUR, whose)
        .order_by(Email.created_at.desc()).limit(VERIFY_EMAILS_PER_HOUR)]
    return recent[-1] + HOUR if len(recent) == VERIFY_EMAILS_PER_HOUR else now


def mark_verified(user):
    """Count `user`'s current address as verified without a link: for accounts Penstock makes
    itself (the demo user), whose address is its own."""
    now = utcnow()
    with write_transaction():
        User.update(email_verified_at=now).where(User.id == user.id).execute()
    user.email_verified_at = now
    return user


def verify(token, ip=None):
    """Verify the address that the link's `token` was made for, for its account; returns the
    account and whether it was verified already: opening the link again once it has worked
    changes nothing. Raises LinkRefused for a forged, altered, expired or stale link,
    an account that is gone, or an address another account verified first.

    What it does: the address becomes the account's, verified (the old one, after Change email,
    is let go); the mail held meanwhile goes to it; verification emails not yet sent are
    withdrawn; `user.email.verify` is written."""
    claim = verification_claim(token)
    if claim == 'expired':
        raise LinkRefused(LINK_EXPIRED, 410)
    if claim is None:
        raise LinkRefused(LINK_BROKEN, 400)
    user_id, address = claim
    with write_transaction():
        user = User.get_or_none(User.id == user_id)
        if user is None:
            raise LinkRefused(LINK_GONE, 404)
        if user.email == address and user.email_verified:
            return user, True
        if address not in (user.email, user.new_email):
            raise LinkRefused(LINK_STALE, 409)
        holder = User.verified_holder(address)
        if holder is not None:
            raise LinkRefused(LINK_TAKEN, 409)
        old, now = user.email, utcnow()
        User.update(email=address, email_verified_at=now, new_email=None,
                    email_undeliverable_at=None, updated_at=now,
                    version_id=User.version_id + 1).where(User.id == user.id).execute()
        # A notice to an old address that was never verified has nobody to tell.
        Email.delete().where(Email.user_id == user.id, Email.held == True,  # noqa: E712 (SQL)
                             Email.kind == CHANGE_NOTICE).execute()
        Email.update(held=False, to_address=address).where(
            Email.user_id == user.id, Email.held == True).execute()  # noqa: E712 (SQL, not Python)
        Email.delete().where(Email.user_id == user.id, Email.kind == VERIFY,
                             Email.status == 'pending', Email.locked_until.is_null()).execute()
        data = {'address': address}
        if old != address:
            data['replaced'] = old
        AuditRecord.write('user.email.verify', user, ip, target=user, data=data)
    user.email, user.email_verified_at, user.new_email = address, now, None
    return user, False


def request_change(user, new_email, ip=None):
    """Change email: send a link to `new_email` (raises Invalid at `new_email`, or TooSoon),
    which makes it the account's address when opened, and a System notice to the current
    one. Until then the current address stays; a newer request replaces an older one (whose
    link then verifies nothing). Writes `user.email.update`."""
    try:
        address = normalised_email(new_email)
    except Invalid as invalid:
        raise Invalid({'new_email': invalid.errors['email']}) from None
    with write_transaction():
        current = User.get_by_id(user.id)
        if address == current.email and current.email_verified:
            raise Invalid({'new_email': 'This is already your email address.'})
        if User.verified_holder(address) is not None:
            raise Invalid({'new_email': ADDRESS_TAKEN})
        ask_to_verify(current, ip, address)
        User.update(new_email=address).where(User.id == user.id).execute()
        AuditRecord.write('user.email.update', current, ip, target=current,
                          data={'address': {'old': current.email, 'new': address}})
        Email.tell(CHANGE_NOTICE, current, ip, new=address)
    user.new_email = address
    return address
