"""Announcements: one message to everyone who has its topic on, and the signed link that turns
the topic off again without a login (RFC 8058 one-click unsubscribe).

An announcement is queued by `flask --app app announce` (app.py). Its id is a digest of what
it says, so running the command again with the same topic, subject and body queues nothing
new; users who turned the topic on since (or whose batch a crash cut short) are queued then.
Queuing is INSERT … SELECT in batches of BATCH users: no user is loaded into memory, and each
batch is a short transaction of its own, so the app's other writes wait for none long."""
import hashlib
import json
import re
from urllib.parse import urlsplit

from itsdangerous import BadSignature, URLSafeSerializer
from markupsafe import Markup, escape
from peewee import CharField, DateTimeField, IntegerField, JOIN, TextField, Value, fn

import mail
from database import write_transaction
from mail import Email
from models import BaseModel, Preferences, User, minted, utcnow

TOPICS = {name: label for name, label, _ in Preferences.CHOICES}
BATCH = 5_000  # users looked at per transaction
SUBJECT_MAX = 200
# An http or https URL in an announcement's text: up to a space or a character that cannot
# stand in one unescaped. Anything else (javascript:, data:, mailto:) stays text.
URL_RE = re.compile(r'https?://[^\s<>"\'`]+', re.IGNORECASE)
URL_END = '.,;:!?\'"'  # ends a sentence rather than the URL
# Inline, as mail clients ignore style sheets: a long URL breaks anywhere rather than widening
# the message past a phone's 360 px.
LINK_STYLE = 'color:#0969da;overflow-wrap:anywhere;word-break:break-all'


class Config:
    """What unsubscribe links need from the app's configuration; create_app sets it."""
    secret_key = None  # SECRET_KEY: the links are signed with it (salt 'unsubscribe')


class Announcement(BaseModel):
    """What was announced, to whom (everyone with `topic` on), and how many were queued."""
    id = CharField(primary_key=True)
    topic = CharField()
    subject = TextField()
    body = TextField()
    created_at = DateTimeField(default=utcnow)
    queued = IntegerField(default=0)

    @staticmethod
    def id_of(topic, subject, body):
        """The same announcement always gets the same id: a re-run finds its messages."""
        digest = hashlib.sha256(json.dumps([topic, subject, body]).encode()).hexdigest()
        return 'n_' + digest[:24]


def announce(topic, subject, body, dry_run=False):
    """Queue the announcement to every user who has `topic` on now, has verified their
    address and has not been sent it (nor had mail to their address fail for good); returns
    how many were queued, or with `dry_run` how many would be (queuing nothing)."""
    if topic not in TOPICS:
        raise ValueError(f'unknown topic {topic!r}')
    announcement_id = Announcement.id_of(topic, subject, body)
    if dry_run:
        return _recipients(topic, announcement_id).count()
    with write_transaction(exclusive=False):
        Announcement.insert(id=announcement_id, topic=topic, subject=subject, body=body,
                            created_at=utcnow()).on_conflict_ignore().execute()
    queued, after = 0, None
    while True:
        last = _batch_end(after)
        now = Value(utcnow(), converter=Email.created_at.db_value)
        recipients = _recipients(topic, announcement_id, after, last).select(
            Value('m_' + announcement_id[2:] + '_').concat(Preferences.user_id),
            Value('announcement'), Preferences.user_id, User.email, Value('{}'),
            Value(announcement_id), Value('pending'), Value(False), Value(0), now, now)
        with write_transaction(exclusive=False):
            count = Email.insert_from(recipients, [
                Email.id, Email.kind, Email.user_id, Email.to_address, Email.data,
                Email.announcement_id, Email.status, Email.held, Email.attempts, Email.run_after,
                Email.created_at]).on_conflict_ignore().as_rowcount().execute()
            if count:
                Announcement.update(queued=Announcement.queued + count).where(
                    Announcement.id == announcement_id).execute()
        queued += count
        if last is None:
            return queued
        after = last


def _batch_end(after):
    """The last user id of the batch that starts after `after`; None for the final batch."""
    query = Preferences.select(Preferences.user_id).order_by(Preferences.user_id)
    if after is not None:
        query = query.where(Preferences.user_id > after)
    row = query.offset(BATCH - 1).limit(1).tuples().first()
    return row[0] if row else None


def _recipients(topic, announcement_id, after=None, last=None):
    """The users (Preferences joined to User) the announcement is still to be queued to,
    those with ids in (after, last] when given."""
    sent = Email.alias()
    already = sent.select(Value(1)).where(sent.announcement_id == announcement_id,
                                          sent.user_id == Preferences.user_id)
    query = (Preferences.select().join(User, JOIN.INNER, on=(User.id == Preferences.user_id))
             .where(getattr(Preferences, topic) == True,  # noqa: E712 (SQL, not Python)
                    User.email_undeliverable_at.is_null(), ~fn.EXISTS(already),
                    # An address nobody has verified is sent no announcement, then or later.
                    User.email_verified_at.is_null(False)))
    if after is not None:
        query = query.where(Preferences.user_id > after)
    if last is not None:
        query = query.where(Preferences.user_id <= last)
    return query


# Unsubscribe links ---------------------------------------------------------------------------

def _signer():
    return URLSafeSerializer(Config.secret_key, salt='unsubscribe')


def unsubscribe_token(user_id, topic):
    """The token of the link that turns `topic` off for the user: no login, no expiry (a
    years-old message's link still works); changing SECRET_KEY voids every one."""
    return minted(_signer().dumps([user_id, topic]))


def unsubscribe_url(user_id, topic):
    return f'{mail.Config.public_url.rstrip("/")}/unsubscribe/{unsubscribe_token(user_id, topic)}'


def subscription(token):
    """(the user, the topic) that `token` was made for, or None when it is forged, altered,
    names no topic or a user who is gone."""
    try:
        user_id, topic = _signer().loads(token)
    except (BadSignature, TypeError, ValueError):
        return None
    if not isinstance(user_id, str) or topic not in TOPICS:
        return None
    user = User.get_or_none(User.id == user_id)
    return (user, topic) if user is not None else None


def subscribed(user, topic):
    return getattr(Preferences.for_user(user.id), topic)


def withdraw(user, topics):
    """Drop `user`'s announcements of `topics` that are still to be sent: they were turned
    off (Preferences.change calls this in the same transaction)."""
    Email.delete().where(Email.user_id == user.id, Email.status == 'pending',
                         Email.announcement_id.in_(Announcement.select(Announcement.id).where(
                             Announcement.topic.in_(topics)))).execute()


def unsubscribe(user, topic, ip):
    """Turn `topic` off for `user`, who followed a link in an email (audited as theirs)."""
    Preferences.change(user, {topic: False}, ip, via='email')


# The message -------------------------------------------------------------------------------

def content(email):
    """(subject, plain text, HTML) of an announcement's message: its body as written, and
    why it came and how to stop it, with the unsubscribe link."""
    announcement = Announcement.get_by_id(email.announcement_id)
    handle = User.select(User.handle).where(User.id == email.user_id).scalar()
    context = {'announcement': announcement, 'topic': TOPICS[announcement.topic],
               'paragraphs': [paragraph.strip().split('\n') for paragraph in
                              announcement.body.replace('\r\n', '\n').split('\n\n')
                              if paragraph.strip()],
               'linked': linked,
               'unsubscribe_url': unsubscribe_url(email.user_id, announcement.topic),
               'settings_url': mail.link('notifications.page', handle=handle)}
    return (announcement.subject,
            mail.templates.get_template('email/announcement.txt').render(context),
            mail.templates.get_template('email/announcement.html').render(context))


def linked(text):
    """`text` as HTML: escaped, with each http or https URL in it a link to that URL."""
    pieces, start = [], 0
    for match in URL_RE.finditer(text):
        url = _url_end(match.group())
        if not urlsplit(url).hostname:
            continue
        pieces += [escape(text[start:match.start()]),
                   Markup('<a href="{}" style="{}">{}</a>').format(url, LINK_STYLE, url)]
        start = match.start() + len(url)
    pieces.append(escape(text[start:]))
    return Markup('').join(pieces)


def _url_end(url):
    """`url` without the punctuation after it: a sentence's end, or a closing parenthesis
    that has no opening one in the URL (as in "(see https://example.com)")."""
    while url and (url[-1] in URL_END or url[-1] == ')' and url.count(')') > url.count('(')):
        url = url[:-1]
    return url


def headers(email):
    """RFC 2369's List-Unsubscribe and RFC 8058's one-click List-Unsubscribe-Post."""
    topic = Announcement.select(Announcement.topic).where(
        Announcement.id == email.announcement_id).scalar()
    return {'List-Unsubscribe': f'<{unsubscribe_url(email.user_id, topic)}>',
            'List-Unsubscribe-Post': 'List-Unsubscribe=One-Click'}
