"""RFC 5322, 2045 and 2047 in the bytes that reach a real SMTP server (conftest's aiosmtpd):
a long non-ASCII announcement and every System email keep their lines within 78 characters
(quoted-printable and base64 within 76), fold headers to 78 but for an unbreakable token, never
pass 998, hold encoded words of at most 75, and parse back to what was written. The URLs in an
announcement become links in its HTML part, wrapping on a phone, and nothing else does."""
import email.header
import email.parser
import email.policy
import re

import pytest
from bs4 import BeautifulSoup

import announcements
import database
import mail
import models
import postman
from tests.helpers import make_user
from tests.test_announcements import announce
from tests.test_mail_end_to_end import deliver, parts
from tests.test_system_emails import EVENTS

# 157 characters, most of them not ASCII: as a subject it needs several encoded words.
SUBJECT = 'Ünïcødé ñéws für Prüfer — ' * 6 + 'Ω'
LONG_URL = 'https://docs.penstock.test/guides/' + 'sehr-langer-pfad/' * 20 + 'ende?x=1&y=2'
BODY = (
    'Grüße aus Zürich! ' * 30 + '\n'  # one line of 540 characters
    f'Lies mehr unter {LONG_URL}. Oder (https://penstock.test/a_(b)) hier.\n\n'
    'Kein Link: javascript:alert(1), data:text/html,<b>x</b>, ftp://files.penstock.test '
    'und <script>alert("hi")</script>.\n\n'
    + 'π' * 400)  # a "word" of 400 characters
# The sender's name: every message carries it in its From header.
MAIL_FROM = 'Pénstöck Sïcherheitsbenachrichtigungen für Kontoinhaber <no-reply@penstock.test>'
DEVICE = 'Navigateur Écureuil sur Système d’exploitation très très long ' * 3
ENCODED_WORD = re.compile(rb'=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=')
# A header line that may pass 78: its name and one token that cannot be broken (a URL).
UNBREAKABLE = re.compile(rb'(?:[!-9;-~]+:)? ?\S+')


def problems(raw):
    """What in a message's bytes breaks RFC 5322's line lengths, RFC 2045's for encoded bodies
    or RFC 2047's for encoded words; [] when nothing does."""
    message = email.parser.BytesParser(policy=email.policy.default).parsebytes(raw)
    boundaries = {b'--' + part.get_boundary().encode()
                  for part in message.walk() if part.is_multipart()}
    found, in_headers, encoding = [], True, None
    assert raw.endswith(b'\r\n')
    for number, line in enumerate(raw[:-2].split(b'\r\n'), 1):
        where = f'line {number} ({len(line)} characters): {line[:60]!r}'
        if b'\n' in line or b'\r' in line:
            found.append(f'a bare line break in {where}')
        if len(line) > 998:
            found.append(f'over 998: {where}')
        if line in boundaries or line.endswith(b'--') and line[:-2] in boundaries:
            in_headers, encoding = True, None
        elif in_headers and line == b'':
            in_headers = False
        elif in_headers:
            if len(line) > 78 and not UNBREAKABLE.fullmatch(line):
                found.append(f'a header line over 78 that could fold: {where}')
            found += [f'an encoded word of {len(word)}: {where}'
                      for word in ENCODED_WORD.findall(line) if len(word) > 75]
            name, _, value = line.partition(b':')
            if name.lower() == b'content-transfer-encoding':
                encoding = value.strip().lower()
        else:
            limit = 76 if encoding in (b'quoted-printable', b'base64') else 78
            if len(line) > limit:
                found.append(f'a {encoding.decode() if encoding else "7bit"} body line '
                             f'over {limit}: {where}')
    return found


def sender(raw):
    """The From header of a message's bytes as RFC 2047 decodes it. Python 3.11's own parser
    keeps the space that folding put between two encoded words of a display name (CPython
    gh-128110, fixed later), but whitespace between adjacent encoded words is no text (RFC
    2047, 6.2): email.header decodes by the RFC."""
    value = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw)['From']
    return str(email.header.make_header(email.header.decode_header(value)))


@pytest.fixture
def long_sender(monkeypatch):
    monkeypatch.setattr(postman.Config, 'mail_from', MAIL_FROM)


def test_a_long_non_ascii_announcement_keeps_every_line_limit_and_reads_back_the_same(
        app, smtp_server, tmp_path, long_sender):
    alice = make_user('alice@example.com', 'alice', 'a long password')
    with database.db.connection_context():
        models.Preferences.change(alice, {'tips_and_tricks': True})
    result = announce(app, 'tips_and_tricks', subject=SUBJECT, body=BODY, tmp_path=tmp_path)
    assert result.exit_code == 0, result.output
    [message] = deliver(smtp_server)
    [raw] = smtp_server.raw

    assert problems(raw) == []
    headers = raw.partition(b'\r\n\r\n')[0]
    assert len(ENCODED_WORD.findall(headers)) > 3  # the subject is encoded, in several words
    assert message['Subject'] == SUBJECT
    assert sender(raw) == MAIL_FROM
    url = message['List-Unsubscribe'].strip('<>')
    assert url.startswith(app.config['PUBLIC_URL'] + '/unsubscribe/')  # a URL, not encoded
    text = parts(message)['text/plain']
    assert text.startswith(BODY + '\n\n-- \n')
    page = BeautifulSoup(parts(message)['text/html'], 'html.parser')
    assert page.find('h1').get_text() == SUBJECT
    paragraphs = [p.get_text() for p in page.find_all('p')][1:4]
    assert paragraphs == [paragraph.replace('\n', '') for paragraph in BODY.split('\n\n')]


def test_urls_in_an_announcement_become_links_that_wrap_and_nothing_else_does(
        app, smtp_server, tmp_path):
    alice = make_user('alice@example.com', 'alice', 'a long password')
    with database.db.connection_context():
        models.Preferences.change(alice, {'tips_and_tricks': True})
    assert announce(app, 'tips_and_tricks', subject='Links', body=BODY,
                    tmp_path=tmp_path).exit_code == 0
    [message] = deliver(smtp_server)
    page = BeautifulSoup(parts(message)['text/html'], 'html.parser')
    body_links = [a for a in page.find_all('a') if a.find_parent('hr') is None
                  and 'unsubscribe' not in a['href'] and 'notifications' not in a['href']]
    assert [a['href'] for a in body_links] == [LONG_URL, 'https://penstock.test/a_(b)']
    assert [a.get_text() for a in body_links] == [LONG_URL, 'https://penstock.test/a_(b)']
    for link in body_links:  # a 400-character URL breaks anywhere on a 360 px screen
        assert 'overflow-wrap:anywhere' in link['style']
        assert 'word-break:break-all' in link['style']
    hrefs = [a['href'] for a in page.find_all('a')]
    assert not any(href.startswith(('javascript:', 'data:', 'ftp:')) for href in hrefs)
    assert page.find('script') is None and page.find('b') is None  # the text stays text
    assert '<script>alert("hi")</script>' in page.get_text()
    assert 'data:text/html,<b>x</b>' in page.get_text()


@pytest.mark.parametrize('text, html', [
    ('see https://a.test/x.', 'see <a href="https://a.test/x" style="{s}">https://a.test/x</a>.'),
    ('"https://a.test/?q=<i>&r=1"', '&#34;<a href="https://a.test/?q=" style="{s}">'
                                    'https://a.test/?q=</a>&lt;i&gt;&amp;r=1&#34;'),
    ('HTTP://A.test/ and http://', '<a href="HTTP://A.test/" style="{s}">HTTP://A.test/</a> '
                                   'and http://'),
    ('javascript:alert(1) vbscript:x data:,x mailto:a@b.test',
     'javascript:alert(1) vbscript:x data:,x mailto:a@b.test'),
    ('javascript://a.test/%0aalert(1)', 'javascript://a.test/%0aalert(1)'),
])
def test_only_http_and_https_urls_become_links_and_the_rest_is_escaped(text, html):
    assert str(announcements.linked(text)) == html.format(s=announcements.LINK_STYLE)


def test_every_system_email_keeps_every_line_limit(app, smtp_server, long_sender):
    kinds = list(EVENTS)
    for number, kind in enumerate(kinds):
        person = make_user(f'p{number}@example.com', f'p{number}', 'a long password')
        with database.db.connection_context():
            EVENTS[kind](models.User.get_by_id(person.id))
    with database.db.connection_context():  # as a device with a long non-ASCII name told it
        for queued in mail.Email.select():
            mail.Email.update(data=queued.data.replace('"device": null',
                                                       f'"device": "{DEVICE}"')).where(
                mail.Email.id == queued.id).execute()
    received = deliver(smtp_server)
    assert len(received) == len(kinds)
    for raw, message in zip(smtp_server.raw, received):
        assert problems(raw) == [], message['Subject']
        assert sender(raw) == MAIL_FROM
        assert ' '.join(DEVICE.split()) in ' '.join(parts(message)['text/plain'].split())
