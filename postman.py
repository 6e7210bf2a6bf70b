"""Sends the outbox (mail.Email) off the request path, over SMTP or into a local directory.

A worker leases one due message at a time, builds it (build), hands it to the transport and
records the outcome: sent; refused for now or unreachable (retried with backoff); or refused
for good by the recipient's server (a 5xx answer to RCPT or DATA), when the account is marked
undeliverable (User.email_undeliverable_at, shown on Profile) and an `email.failed` audit
record written. A later message that gets through clears the mark. A worker killed after the
server took a message but before it was recorded leaves its lease to expire and the message
to be sent again, with the same Message-ID, so the receiver can tell it is one message.

Without SMTP_URL the transport is the outbox directory (instance/outbox/): one .eml file per
message, named by its Message-ID, and a log line with the recipient and subject (never the
body), so `make run` needs no mail server and loses nothing."""
import datetime
import logging
import os
import re
import smtplib
import ssl
import tempfile
import threading
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from urllib.parse import unquote, urlsplit

import database
import mail
import models

log = logging.getLogger(__name__)

DEFAULT_MAIL_FROM = 'Penstock <no-reply@penstock.test>'
SMTP_PORTS = {'smtp': 25, 'smtp+starttls': 587, 'smtps': 465}
SMTP_TIMEOUT = 30  # seconds for each step of a conversation (MAIL_LEASE covers all of them)
CLAIM_BATCH = 10  # messages a worker leases at once
# RFC 5322, 2045 and 2047 as the policy applies them: headers folded at 76 (within 78), every
# encoded word fitted to its line (so at most 75), and the body's quoted-printable or base64
# lines at most 76 (the policy's length is theirs too; 7bit is chosen only for lines that fit).
# refold_source='none' leaves a header given with set_raw as it is: an announcement's
# List-Unsubscribe URL, which folding would make an encoded word no mail client reads as a URL.
POLICY = policy.default.clone(max_line_length=76, refold_source='none')
# Headers whose value is one token a client must read as it is (see POLICY).
VERBATIM = frozenset({'list-unsubscribe'})


class Config:
    """What building a message needs from the app's configuration; configure() sets it."""
    mail_from = DEFAULT_MAIL_FROM


def configure(config):
    """Check MAIL_FROM and SMTP_URL and set what the outbox and the messages read from them
    (the Message-ID domain, the From header, the links' base); raises RuntimeError on a
    setting that cannot work, so a bad one stops the app from starting."""
    _, address = parseaddr(config['MAIL_FROM'])
    domain = address.rpartition('@')[2]
    if '@' not in address or not domain:
        raise RuntimeError(f'MAIL_FROM is {config["MAIL_FROM"]!r}: give an address, e.g. '
                           f'{DEFAULT_MAIL_FROM!r}')
    if config['SMTP_URL']:
        SMTPTransport(config['SMTP_URL'])
    Config.mail_from = config['MAIL_FROM']
    mail.Config.domain = domain
    mail.Config.public_url = config['PUBLIC_URL'].rstrip('/')


def build(email):
    """The message for `email` (a mail.Email): From, To, Subject, Date (when it was queued),
    its fixed Message-ID, the headers its kind adds, and plain-text and HTML alternatives."""
    subject, text, html, headers = mail.render(email)
    message = EmailMessage(policy=POLICY)
    message['From'] = Config.mail_from
    message['To'] = email.to_address
    message['Subject'] = subject
    message['Date'] = format_datetime(email.created_at.replace(tzinfo=datetime.timezone.utc))
    message['Message-ID'] = email.message_id
    for name, value in headers.items():
        if name.lower() in VERBATIM:
            message.set_raw(name, value)
        else:
            message[name] = value
    message.set_content(text)
    message.add_alternative(html, subtype='html')
    return message


class SMTPTransport:
    """Sends over SMTP to SMTP_URL's server: smtp:// (plain), smtp+starttls:// (upgraded with
    STARTTLS) or smtps:// (TLS from the start), logging in when the URL has a user. One
    connection is kept while there is mail to send; close() ends it."""

    def __init__(self, url, timeout=SMTP_TIMEOUT):
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            port = -1
        if parts.scheme not in SMTP_PORTS or not parts.hostname or port == -1:
            # Only the scheme and host are repeated: the URL may hold a password.
            raise RuntimeError(
                f'SMTP_URL ({parts.scheme or "no scheme"}://{parts.hostname or "no host"}) '
                'must be smtp://, smtp+starttls:// or smtps://[user:password@]host[:port]')
        self.scheme, self.host = parts.scheme, parts.hostname
        self.port = port or SMTP_PORTS[parts.scheme]
        self.username = None if parts.username is None else unquote(parts.username)
        self.password = unquote(parts.password or '')
        self.timeout = timeout
        self._connection = None

    def __str__(self):
        return f'{self.scheme}://{self.host}:{self.port}'  # never the credentials

    def send(self, message):
        """Send `message` to its To address. A connection the server dropped since the last
        message is opened again once; any other error ends the connection and is raised."""
        reused = self._connection is not None
        try:
            if self._connection is None:
                self._connection = self._connect()
            try:
                self._connection.send_message(message)
            except smtplib.SMTPServerDisconnected:
                if not reused:
                    raise
                self._connection = self._connect()
                self._connection.send_message(message)
        except Exception:
            self.close()
            raise

    def close(self):
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            connection.quit()
        except (smtplib.SMTPException, OSError):
            connection.close()

    def _connect(self):
        context = ssl.create_default_context()
        if self.scheme == 'smtps':
            connection = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout,
                                          context=context)
        else:
            connection = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        try:
            if self.scheme == 'smtp+starttls':
                connection.starttls(context=context)
            if self.username is not None:
                connection.login(self.username, self.password)
        except BaseException:
            connection.close()
            raise
        return connection


class OutboxTransport:
    """Keeps each message as `directory`/<Message-ID>.eml (written whole, then renamed into
    place, so a reader never sees half a message) and logs its recipient and subject."""

    def __init__(self, directory):
        self.directory = directory

    def __str__(self):
        return f'the outbox {self.directory}'

    def send(self, message):
        os.makedirs(self.directory, exist_ok=True)
        name = re.sub(r'[^A-Za-z0-9@._-]', '_', message['Message-ID'].strip('<>'))
        path = os.path.join(self.directory, name + '.eml')
        fd, partial = tempfile.mkstemp(dir=self.directory, prefix='.', suffix='.tmp')
        try:
            with os.fdopen(fd, 'wb') as f:
                f.write(message.as_bytes())
                f.flush()
                os.fsync(f.fileno())
            os.replace(partial, path)
        except BaseException:
            os.unlink(partial)
            raise
        log.info('Mail to %s kept in the outbox (no SMTP_URL is set): "%s", %s',
                 message['To'], message['Subject'], path)

    def close(self):
        """Nothing stays open between messages."""


def transport(config, instance_path):
    """The transport `config` asks for: SMTP_URL's server, or instance/outbox/."""
    if config['SMTP_URL']:
        return SMTPTransport(config['SMTP_URL'])
    return OutboxTransport(os.path.join(instance_path, 'outbox'))


def run_once(sender, lease):
    """Claim up to CLAIM_BATCH due messages and send them with `sender` (a transport), one
    by one, each recorded as it goes; how many were taken on (0 when none was due). Once half
    the lease is spent, the rest are given back rather than sent so late that another worker
    might take them too."""
    emails = mail.Email.claim(lease, CLAIM_BATCH)
    deadline = emails[0].locked_until - lease / 2 if emails else None
    for number, email in enumerate(emails):
        if number and models.utcnow() > deadline:
            for rest in emails[number:]:
                rest.release()
            return number
        _send(sender, email)
    return len(emails)


def _send(sender, email):
    try:
        sender.send(build(email))
    except Exception as error:  # noqa: BLE001 - every failure is recorded and retried or final
        _failed(email, error)
    else:
        email.sent()
        if email.user_id:  # the address works: no longer undeliverable
            User = models.User
            User.update(email_undeliverable_at=None).where(
                User.id == email.user_id, User.email == email.to_address,
                User.email_undeliverable_at.is_null(False)).execute()


def _refusal(error):
    """(code, text) when `error` is the receiving server's answer to this message (to RCPT
    or DATA), else None: a connection, TLS, login or sender problem is ours, not the
    recipient's."""
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        code, text = next(iter(error.recipients.values()))
    elif isinstance(error, smtplib.SMTPDataError):
        code, text = error.smtp_code, error.smtp_error
    else:
        return None
    if isinstance(text, bytes):
        text = text.decode('utf-8', 'replace')
    return code, ' '.join(str(text).split())


def _failed(email, error):
    """Record a failed attempt: retried later, or failed for good (a 5xx refusal, or the
    last attempt), when the account hears of it in its audit log and, if the recipient's
    server refused, on Profile. What is kept and logged is the server's answer or the
    error's type: an error's own message could quote the SMTP password."""
    refusal = _refusal(error)
    if refusal is not None:
        code, text = refusal
        summary = f'{code} {text}'
        permanent = 500 <= code < 600
    else:
        code = getattr(error, 'smtp_code', None)
        summary = type(error).__name__ + (f' {code}' if code else '')
        permanent = False
    with database.write_transaction():
        final = email.failed(summary, permanent=permanent)
        user = final and email.user_id and models.User.get_or_none(
            models.User.id == email.user_id)
        if user:
            if refusal is not None and user.email == email.to_address:
                models.User.update(email_undeliverable_at=models.utcnow()).where(
                    models.User.id == user.id).execute()
            models.AuditRecord.write('email.failed', user, None, target=user,
                                     data={'kind': email.kind, 'code': code})
    log.warning('Mail %s (%s) to %s %s (attempt %d): %s', email.id, email.kind,
                email.to_address, 'failed for good' if final else 'will be retried',
                email.attempts, summary[:200])


def run(sender, lease, poll, stop):
    """Work until `stop` (a threading.Event) is set: every due message, then wait `poll` s
    (the SMTP connection is closed while there is nothing to send)."""
    database.work_until(stop, poll, lambda: run_once(sender, lease), log, 'mail worker',
                        idle=sender.close)


def settings(config):
    """The lease and poll interval that `config` (the app's) asks for."""
    return datetime.timedelta(seconds=config['MAIL_LEASE']), config['MAIL_POLL']


def start_thread(config, instance_path):
    """Run a mail worker in a daemon thread of this process (what `make run` does); returns
    the Event that stops it."""
    stop = threading.Event()
    lease, poll = settings(config)
    threading.Thread(target=run, args=(transport(config, instance_path), lease, poll, stop),
                     name='postman', daemon=True).start()
    return stop
