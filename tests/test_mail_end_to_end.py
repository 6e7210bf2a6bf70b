"""The whole way, on a real SMTP server (conftest's aiosmtpd): each System event and an
announcement are queued by what a person or an operator does, sent by the mail worker over
SMTP, and arrive parsed as a mail client would read them; the one-click unsubscribe URL an
announcement carries, POSTed as a mail provider would, turns the topic off without a login."""
import datetime

import database
import models
import postman
from tests.conftest import MADE_SECRETS
from tests.helpers import make_user
from tests.test_announcements import announce
from tests.test_system_emails import EVENTS

LEASE = datetime.timedelta(seconds=30)


def deliver(smtp_server):
    """Send every due message over SMTP to `smtp_server`, as the worker does."""
    sender = postman.SMTPTransport(smtp_server.url)
    try:
        with database.db.connection_context():
            while postman.run_once(sender, LEASE):
                pass
    finally:
        sender.close()
    return smtp_server.received


def parts(message):
    """{content type: text} of a received message's text and HTML parts."""
    return {part.get_content_type(): part.get_content()
            for part in message.walk() if part.get_content_maintype() == 'text'}


def test_every_system_event_arrives_once_with_both_parts_and_no_secret(app, smtp_server):
    kinds = list(EVENTS)
    for number, kind in enumerate(kinds):
        person = make_user(f'p{number}@example.com', f'p{number}', 'a long password')
        with database.db.connection_context():
            EVENTS[kind](models.User.get_by_id(person.id))
    received = deliver(smtp_server)
    assert sorted(message['To'] for message in received) == sorted(
        f'p{number}@example.com' for number in range(len(kinds)))
    assert len({message['Message-ID'] for message in received}) == len(kinds)
    for message in received:
        texts = parts(message)
        assert set(texts) == {'text/plain', 'text/html'}
        assert message['List-Unsubscribe'] is None  # System emails cannot be turned off
        assert message['From'] == postman.Config.mail_from
        everything = message.as_string()
        for secret in MADE_SECRETS:
            assert not secret or secret not in everything
    assert deliver(smtp_server) == received  # each sent once


def test_an_announcement_arrives_and_its_one_click_unsubscribe_turns_the_topic_off(
        app, client, smtp_server, tmp_path):
    alice = make_user('alice@example.com', 'alice', 'a long password')
    with database.db.connection_context():
        models.Preferences.change(alice, {'tips_and_tricks': True})
    result = announce(app, 'tips_and_tricks', subject='Tips for December', tmp_path=tmp_path)
    assert result.exit_code == 0, result.output
    [message] = deliver(smtp_server)
    assert message['Subject'] == 'Tips for December'
    assert message['List-Unsubscribe-Post'] == 'List-Unsubscribe=One-Click'
    url = message['List-Unsubscribe'].strip('<>')
    assert url.startswith(app.config['PUBLIC_URL'] + '/unsubscribe/')
    # As it came over the wire: the URL itself (no encoded word), on one line.
    assert f'\r\nList-Unsubscribe: <{url}>\r\n'.encode() in smtp_server.raw[0]
    assert url in parts(message)['text/plain']

    path = url.removeprefix(app.config['PUBLIC_URL'])
    assert client.get(path).status_code == 200  # the page: nothing changes on GET
    with database.db.connection_context():
        assert models.Preferences.get_by_id(alice.id).tips_and_tricks
    response = client.post(path, data={'List-Unsubscribe': 'One-Click'})  # RFC 8058's POST
    assert response.status_code == 200
    with database.db.connection_context():
        assert not models.Preferences.get_by_id(alice.id).tips_and_tricks
