"""Sending the outbox (postman.py) to a real SMTP server on loopback (the smtp_server
fixture): delivered once with its headers and both parts, kept as .eml files without
SMTP_URL, retried when the server is down or answers 4xx, failed for good on 5xx (the
account marked, audited, told on Profile), sent again with the same Message-ID after a worker
dies mid-send, nothing for a rolled-back event, and no secret in logs or errors."""
import datetime
import email.parser
import email.policy
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from bs4 import BeautifulSoup

import credentials
import database
import mail
import models
import postman
from app import create_app
from tests.conftest import TEST_PASSWORD_KEY
from views.audit import audit_sentence

ROOT = Path(__file__).resolve().parents[1]
LEASE = datetime.timedelta(seconds=30)
PROFILE = '/user/alice/settings/profile'


def queue(user, ip='203.0.113.9', last4='abcd'):
    """Queue a new-token System email to `user` in a transaction of its own, as the event
    would."""
    with database.db.connection_context(), database.write_transaction():
        return mail.Email.tell('token.create', user, ip, last4=last4)


def deliver(sender):
    """Send every due message with `sender`, as a worker would; how many it took on."""
    taken = 0
    with database.db.connection_context():
        while taken_now := postman.run_once(sender, LEASE):
            taken += taken_now
    sender.close()
    return taken


def emails():
    with database.db.connection_context():
        return list(mail.Email.select().order_by(mail.Email.created_at, mail.Email.id))


def fresh(user):
    with database.db.connection_context():
        return models.User.get_by_id(user.id)


def make_due():
    """The backoff is over (instead of waiting it out)."""
    with database.db.connection_context():
        mail.Email.update(run_after=models.utcnow()).execute()


def audit_records(user, action):
    with database.db.connection_context():
        return list(models.AuditRecord.select().where(models.AuditRecord.identity == user.id,
                                                      models.AuditRecord.action_type == action))


def test_a_message_is_delivered_once_with_its_headers_and_both_parts(user, smtp_server):
    queued = queue(user)

    assert deliver(postman.SMTPTransport(smtp_server.url)) == 1
    assert deliver(postman.SMTPTransport(smtp_server.url)) == 0  # sent: not taken again

    [message] = smtp_server.wait_for(1)
    assert message['From'] == 'Penstock <no-reply@penstock.test>'
    assert message['To'] == 'alice@example.com'
    assert message['Subject']
    assert message['Message-ID'] == queued.message_id
    assert queued.message_id.endswith('@penstock.test>')  # the domain of MAIL_FROM
    assert message['Date'].datetime == queued.created_at.replace(
        microsecond=0, tzinfo=datetime.timezone.utc)
    assert message.get_content_type() == 'multipart/alternative'
    assert [part.get_content_type() for part in message.iter_parts()] == [
        'text/plain', 'text/html']
    assert message.get_body(('plain',)).get_content().strip()
    assert message.get_body(('html',)).get_content().strip()
    assert 'List-Unsubscribe' not in message  # a System email
    [sent] = emails()
    assert sent.status == 'sent' and sent.attempts == 1 and sent.sent_at is not None


def test_mail_from_names_the_sender_and_the_message_id_domain(database_url, user,
                                                              smtp_server):
    create_app({'TESTING': True, 'SECRET_KEY': 'x', 'DATABASE_URL': database_url,
                'DATABASE_PASSWORD_KEYS': TEST_PASSWORD_KEY,
                'MAIL_FROM': 'Example Ops <ops@mail.example.org>'})
    queued = queue(user)
    deliver(postman.SMTPTransport(smtp_server.url))
    [message] = smtp_server.wait_for(1)
    assert message['From'] == 'Example Ops <ops@mail.example.org>'
    assert message['Message-ID'] == queued.message_id == f'<{queued.id}@mail.example.org>'


@pytest.mark.parametrize('mail_from', ['', 'Penstock', 'Penstock <nobody>'])
def test_a_mail_from_without_an_address_stops_the_app(database_url, mail_from):
    with pytest.raises(RuntimeError, match='MAIL_FROM'):
        create_app({'TESTING': True, 'SECRET_KEY': 'x', 'DATABASE_URL': database_url,
                    'DATABASE_PASSWORD_KEYS': TEST_PASSWORD_KEY, 'MAIL_FROM': mail_from})


def test_smtp_urls_are_read_with_their_default_ports_and_never_shown_with_a_password():
    plain = postman.SMTPTransport('smtp://mail.example.org')
    starttls = postman.SMTPTransport('smtp+starttls://me%40example.org:p%2Fss@mail.example.org')
    tls = postman.SMTPTransport('smtps://me:pass@mail.example.org:2465')
    assert (plain.port, plain.username) == (25, None)
    assert (starttls.port, starttls.username, starttls.password) == (
        587, 'me@example.org', 'p/ss')
    assert (tls.port, str(tls)) == (2465, 'smtps://mail.example.org:2465')
    for url in ('http://me:hunter2@mail.example.org', 'smtp://me:hunter2@', 'smtp://h:99999',
                'mail.example.org'):
        with pytest.raises(RuntimeError) as refused:
            postman.SMTPTransport(url)
        assert 'hunter2' not in str(refused.value)


def test_without_smtp_url_each_message_is_an_eml_file_and_a_log_line(app, user, tmp_path,
                                                                     caplog):
    assert str(postman.transport(app.config, app.instance_path)) == (
        'the outbox ' + os.path.join(app.instance_path, 'outbox'))
    outbox = tmp_path / 'outbox'
    first, second = queue(user), queue(user, ip='198.51.100.77')
    caplog.set_level('INFO', logger='postman')

    assert deliver(postman.OutboxTransport(str(outbox))) == 2

    assert sorted(path.name for path in outbox.iterdir()) == sorted(
        f'{each.id}@penstock.test.eml' for each in (first, second))  # nothing half-written
    with open(outbox / f'{second.id}@penstock.test.eml', 'rb') as f:
        message = email.parser.BytesParser(policy=email.policy.default).parse(f)
    assert message['Message-ID'] == second.message_id and message['To'] == user.email
    assert '198.51.100.77' in message.get_body(('plain',)).get_content()
    [line] = [r.getMessage() for r in caplog.records if second.id in r.getMessage()]
    assert user.email in line and message['Subject'] in line
    assert '198.51.100.77' not in caplog.text  # the body is never logged
    assert {each.status for each in emails()} == {'sent'}


def test_smtp_down_then_up_delivers_the_message_once_after(user, smtp_server):
    queue(user)
    smtp_server.down()
    before = models.utcnow()
    assert deliver(postman.SMTPTransport(smtp_server.url)) == 1
    [waiting] = emails()
    assert waiting.status == 'pending' and waiting.attempts == 1
    assert waiting.last_error == 'ConnectionRefusedError'
    assert waiting.run_after >= before + datetime.timedelta(seconds=2)
    assert deliver(postman.SMTPTransport(smtp_server.url)) == 0  # backing off

    smtp_server.up()
    make_due()
    assert deliver(postman.SMTPTransport(smtp_server.url)) == 1
    assert len(smtp_server.wait_for(1)) == 1
    [sent] = emails()
    assert sent.status == 'sent' and sent.attempts == 2 and sent.last_error is None
    make_due()
    assert deliver(postman.SMTPTransport(smtp_server.url)) == 0
    assert len(smtp_server.received) == 1


def test_451_then_250_delivers_on_the_retry_and_marks_nothing(user, smtp_server):
    queue(user)
    smtp_server.refuse('451 4.3.0 Try again later')
    assert deliver(postman.SMTPTransport(smtp_server.url)) == 1
    [waiting] = emails()
    assert waiting.status == 'pending' and waiting.last_error == '451 4.3.0 Try again later'
    assert smtp_server.received == []

    make_due()
    assert deliver(postman.SMTPTransport(smtp_server.url)) == 1
    assert len(smtp_server.wait_for(1)) == 1
    assert emails()[0].status == 'sent'
    assert fresh(user).email_undeliverable_at is None
    assert audit_records(user, 'email.failed') == []


def test_550_fails_for_good_marks_the_account_audits_it_and_profile_says_so(
        client, logged_in, smtp_server):
    queue(logged_in)
    smtp_server.refuse('550 5.1.1 No such user here')
    assert deliver(postman.SMTPTransport(smtp_server.url)) == 1

    [failed] = emails()
    assert failed.status == 'failed' and failed.last_error == '550 5.1.1 No such user here'
    make_due()
    assert deliver(postman.SMTPTransport(smtp_server.url)) == 0  # never tried again
    assert fresh(logged_in).email_undeliverable_at is not None
    [record] = audit_records(logged_in, 'email.failed')
    data = json.loads(record.data)
    assert data == {'kind': 'token.create', 'code': 550}
    assert audit_sentence('email.failed', data) == (
        'could not be sent an email about a new token (their mail server answered 550)')
    notice = BeautifulSoup(client.get(PROFILE).text, 'html.parser').find(
        id='email-undeliverable')
    assert notice is not None
    assert "We couldn't deliver email to alice@example.com" in notice.get_text()

    queue(logged_in)  # a later message gets through: the mark goes
    assert deliver(postman.SMTPTransport(smtp_server.url)) == 1
    assert fresh(logged_in).email_undeliverable_at is None
    page = BeautifulSoup(client.get(PROFILE).text, 'html.parser')
    assert page.find(id='email-undeliverable') is None


def test_mail_to_a_deleted_account_that_fails_for_good_is_recorded_on_the_message(
        user, smtp_server):
    queue(user)
    with database.db.connection_context():
        models.User.delete().where(models.User.id == user.id).execute()
    smtp_server.refuse('550 5.1.1 No such user here')
    assert deliver(postman.SMTPTransport(smtp_server.url)) == 1
    assert emails()[0].status == 'failed'


def test_a_worker_leases_a_batch_that_no_other_worker_takes(user):
    queued = {queue(user).id for _ in range(3)}
    with database.db.connection_context():
        first = mail.Email.claim(LEASE, limit=2)
        second = mail.Email.claim(LEASE, limit=10)
        third = mail.Email.claim(LEASE, limit=10)
    assert len(first) == 2 and len(second) == 1 and third == []
    assert {email.id for email in first + second} == queued


def test_a_batch_whose_lease_is_half_spent_gives_the_rest_back_untried(user, smtp_server):
    queued = [queue(user) for _ in range(3)]
    sender = postman.SMTPTransport(smtp_server.url)
    with database.db.connection_context():  # a lease over as soon as it starts
        assert postman.run_once(sender, datetime.timedelta(0)) == 1
    sender.close()
    assert len(smtp_server.wait_for(1)) == 1
    rest = [each for each in emails() if each.status == 'pending']
    assert len(rest) == 2 and len(queued) == 3
    assert all(each.attempts == 0 and each.locked_until is None for each in rest)


def test_a_rolled_back_event_queues_nothing(user, smtp_server):
    with pytest.raises(RuntimeError):
        with database.db.connection_context(), database.write_transaction():
            mail.Email.tell('token.create', user, '203.0.113.9', last4='abcd')
            raise RuntimeError('the event failed after its mail was queued')
    assert emails() == []
    assert deliver(postman.SMTPTransport(smtp_server.url)) == 0
    assert smtp_server.received == []


def test_no_secret_reaches_a_message_an_error_or_a_log(user, smtp_server, caplog):
    caplog.set_level('INFO')
    with database.db.connection_context():
        token, secret = credentials.Token.issue(user)  # which queues its System email
    # aiosmtpd offers no AUTH over plain text: logging in fails, and must not show the password
    with_login = postman.SMTPTransport(
        f'smtp://penstock:smtp-password-0f3c@127.0.0.1:{smtp_server.port}')
    assert deliver(with_login) == 1
    [waiting] = emails()
    assert waiting.last_error == 'SMTPNotSupportedError'
    assert 'smtp-password-0f3c' not in caplog.text and 'smtp-password-0f3c' not in str(with_login)

    make_due()
    assert deliver(postman.SMTPTransport(smtp_server.url)) == 1
    [message] = smtp_server.wait_for(1)
    assert secret not in message.as_string()
    assert secret not in caplog.text


def test_starttls_refused_by_the_server_is_retried_not_sent_in_the_clear(user, smtp_server):
    queue(user)
    assert deliver(postman.SMTPTransport(f'smtp+starttls://127.0.0.1:{smtp_server.port}')) == 1
    assert emails()[0].last_error == 'SMTPNotSupportedError'
    assert smtp_server.received == []


def test_the_worker_thread_sends_what_is_queued(database_url, user, smtp_server):
    app = create_app({'TESTING': True, 'SECRET_KEY': 'x', 'DATABASE_URL': database_url,
                      'DATABASE_PASSWORD_KEYS': TEST_PASSWORD_KEY, 'SMTP_URL': smtp_server.url,
                      'MAIL_WORKER_THREAD': True, 'MAIL_POLL': 0.05})
    try:
        queued = queue(user)
        [message] = smtp_server.wait_for(1)
        assert message['Message-ID'] == queued.message_id
    finally:
        app.extensions['mail_stop'].set()
        # Joined before the test's database closes: a worker mid-statement on a closed
        # SQLite connection crashes the interpreter.
        for thread in threading.enumerate():
            if thread.name == 'postman':
                thread.join(timeout=30)


# `flask --app app worker` as a process


@pytest.fixture
def workers(app, smtp_server):
    """Start `flask --app app worker` processes on this test's database, sending to the
    test's SMTP server; all are gone after."""
    started = []

    def start(lease=2):
        env = {**os.environ, 'DATABASE_URL': app.config['DATABASE_URL'],
               'DATABASE_PASSWORD_KEYS': TEST_PASSWORD_KEY, 'SECRET_KEY': 'worker test',
               'SMTP_URL': smtp_server.url, 'MAIL_LEASE': str(lease), 'MAIL_POLL': '0.1',
               'PROPAGATION_POLL': '0.1', 'PYTHONUNBUFFERED': '1'}
        env.pop('MAIL_WORKER_THREAD', None)
        env.pop('PROPAGATION_WORKER_THREAD', None)
        process = subprocess.Popen([sys.executable, '-m', 'flask', '--app', 'app', 'worker'],
                                   cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)


def wait_until_sent(process, timeout=30):
    deadline = time.monotonic() + timeout
    while any(each.status != 'sent' for each in emails()):
        if process.poll() is not None:
            pytest.fail(f'the worker exited ({process.returncode}): ' + process.communicate()[0])
        if time.monotonic() > deadline:
            pytest.fail('timed out waiting for every message to be sent')
        time.sleep(0.05)


@pytest.mark.slow  # worker processes, one killed with SIGKILL
def test_a_worker_killed_mid_send_leaves_one_duplicate_with_the_same_message_id(
        user, smtp_server, workers):
    queued = [queue(user, ip=f'203.0.113.{n}') for n in range(3)]
    smtp_server.hold()  # the server takes the first message in and does not answer
    first = workers()
    [held] = smtp_server.wait_for(1)
    first.kill()  # kill -9 while it waits for the server's answer
    first.communicate(timeout=10)
    smtp_server.release()
    assert [each.status for each in emails()].count('sent') == 0

    second = workers()
    wait_until_sent(second)

    received = [message['Message-ID'] for message in smtp_server.received]
    assert sorted(received) == sorted([held['Message-ID']] + [q.message_id for q in queued])
    assert received.count(held['Message-ID']) == 2  # the unacknowledged one, once more
    second.send_signal(signal.SIGTERM)
    output, _ = second.communicate(timeout=20)
    lines = output.splitlines()
    assert second.returncode == 0
    assert lines[0] == 'Propagation worker started.'
    assert f'Mail worker started: sending to smtp://127.0.0.1:{smtp_server.port}.' in lines
    assert lines[-2:] == ['Mail worker stopped.', 'Propagation worker stopped.']
