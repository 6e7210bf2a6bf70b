"""A flood of System emails to one address collapses, and no notice is lost: the first 10 in
an hour go at once, the rest wait for the hour to end and arrive as one summary listing each,
on a real SMTP server (conftest's aiosmtpd). Time passes by moving the stored times back, not
by waiting; workers that die mid-way leave nothing unsent."""
import datetime
import json
import threading

import database
import mail
import models
from tests.test_announcements import announce
from tests.test_mail_end_to_end import deliver, parts
from tests.test_mail_standards import problems
from tests.test_postman import LEASE, audit_records, emails, queue
from views.audit import audit_sentence

HOUR = datetime.timedelta(hours=1, seconds=1)


def flood(user, count, first=0):
    """Queue `count` new-token notices to `user`, each in its own event; their last 4
    characters, in order."""
    numbers = [f'{n:04d}' for n in range(first, first + count)]
    for last4 in numbers:
        queue(user, last4=last4)
    return numbers


def an_hour_passes():
    """Every stored time of the outbox and the flood rule moves an hour (and a second) back."""
    with database.db.connection_context():
        for model, names in ((mail.Email, ('created_at', 'run_after', 'sent_at', 'locked_until')),
                             (mail.FloodWindow, ('started_at',))):
            for row in model.select():
                model.update({name: getattr(row, name) - HOUR for name in names
                              if getattr(row, name) is not None}).where(
                    model._meta.primary_key == row.get_id()).execute()


def tokens_told(message):
    """The last 4 characters of each token a received message tells of, in its order: a
    notice's in its subject, a summary's in its list."""
    if message['Subject'].startswith('New API token'):
        return [message['Subject'].split('pst_…')[1]]
    return [line.split('pst_…')[1] for line in parts(message)['text/plain'].splitlines()
            if line.startswith('- ') and 'pst_…' in line]


def by_status():
    counts = {}
    for email in emails():
        counts[email.status] = counts.get(email.status, 0) + 1
    return counts


def test_25_notices_in_an_hour_send_10_at_once_and_one_summary_of_15_when_it_ends(
        user, smtp_server):
    numbers = flood(user, 25)
    received = deliver(smtp_server)
    assert [tokens_told(message) for message in received] == [[n] for n in numbers[:10]]
    [summary] = [email for email in emails() if email.kind == mail.SUMMARY]
    first = emails()[0]
    assert summary.run_after == first.created_at + mail.FLOOD_WINDOW  # due when the hour ends
    held = [email for email in emails() if email.summary_id == summary.id]
    assert len(held) == 15 and {email.status for email in held} == {'pending'}
    assert deliver(smtp_server) == received  # nothing more within the hour

    an_hour_passes()
    received = deliver(smtp_server)
    assert len(received) == 11
    message = received[-1]
    assert message['To'] == user.email
    assert message['Subject'] == '15 more notices about your Penstock account'
    assert message['List-Unsubscribe'] is None and message['Auto-Submitted'] == 'auto-generated'
    assert problems(smtp_server.raw[-1]) == []
    assert tokens_told(message) == numbers[10:]  # each held notice, oldest first
    assert parts(message)['text/plain'].count('from 203.0.113.9') == 15
    html = parts(message)['text/html']
    assert all(f'New API token pst_…{n}' in html for n in numbers[10:])
    assert by_status() == {'sent': 26}  # the 25 notices and the summary: none lost

    queue(user, last4='next')  # a new hour: a notice goes at once again
    assert tokens_told(deliver(smtp_server)[-1]) == ['next']


def test_a_worker_that_dies_mid_way_loses_nothing_and_sends_nothing_twice(user, smtp_server):
    numbers = flood(user, 25)
    with database.db.connection_context():
        assert len(mail.Email.claim(LEASE, 4)) == 4  # a worker takes 4 and dies
    an_hour_passes()  # its lease ran out, and so did the hour
    flood(user, 1, first=25)  # a new hour's first notice
    with database.db.connection_context():
        claimed = mail.Email.claim(LEASE, 100)  # a worker takes everything due and dies
    assert sum(email.kind == mail.SUMMARY for email in claimed) == 1
    with database.db.connection_context():
        mail.Email.update(locked_until=models.utcnow()).execute()  # its lease runs out

    received = deliver(smtp_server)  # a new worker
    told = sorted(tokens_told(message)[0] for message in received
                  if message['Subject'].startswith('New API token'))
    assert told == sorted(numbers[:10] + ['0025'])
    [summary] = [message for message in received if 'more notices' in message['Subject']]
    assert tokens_told(summary) == numbers[10:]
    assert len(received) == 12 and by_status() == {'sent': 27}


def test_a_notice_after_its_summary_was_claimed_goes_in_the_next_summary(user, smtp_server):
    flood(user, 11)
    with database.db.connection_context():  # the summary is taken early (a worker's clock ahead)
        mail.Email.update(run_after=models.utcnow()).where(
            mail.Email.kind == mail.SUMMARY).execute()
        [claimed] = [email for email in mail.Email.claim(LEASE, 100)
                     if email.kind == mail.SUMMARY]
    late = flood(user, 1, first=11)  # queued while that summary is being sent
    deliver(smtp_server)
    assert [email.status for email in emails() if email.id == claimed.id] == ['pending']
    with database.db.connection_context():
        mail.Email.update(locked_until=models.utcnow()).where(
            mail.Email.id == claimed.id).execute()
    received = deliver(smtp_server)
    assert tokens_told(received[-1]) == ['0010']  # the one it held when it was taken
    an_hour_passes()
    received = deliver(smtp_server)
    assert received[-1]['Subject'] == '1 more notice about your Penstock account'
    assert tokens_told(received[-1]) == late
    assert by_status() == {'sent': 14}


def test_a_summary_refused_for_good_fails_what_it_held_and_the_audit_log_says_so(
        user, smtp_server):
    flood(user, 12)
    deliver(smtp_server)
    an_hour_passes()
    smtp_server.refuse('550 5.1.1 No such user here')
    assert len(deliver(smtp_server)) == 10
    assert by_status() == {'sent': 10, 'failed': 3}  # the summary and the 2 it held
    [record] = audit_records(user, 'email.failed')
    assert audit_sentence('email.failed', json.loads(record.data)) == (
        'could not be sent an email listing the notices held back in a flood of them '
        '(their mail server answered 550)')


def test_announcements_neither_count_nor_wait(app, user, smtp_server, tmp_path):
    with database.db.connection_context():
        models.Preferences.change(user, {'tips_and_tricks': True})
    flood(user, 10)
    assert announce(app, 'tips_and_tricks', subject='Tips', tmp_path=tmp_path).exit_code == 0
    received = deliver(smtp_server)
    assert len(received) == 11 and received[-1]['Subject'] == 'Tips'
    flood(user, 1, first=10)
    assert len(deliver(smtp_server)) == 11  # the 11th notice of the hour waits


def test_deleting_the_account_in_a_flood_still_tells_its_address_when_the_hour_ends(
        user, smtp_server):
    flood(user, 12)
    deliver(smtp_server)
    with database.db.connection_context():
        models.User.get_by_id(user.id).delete_account('203.0.113.9')
    assert len(deliver(smtp_server)) == 10  # its other mail went with it; this one waits
    an_hour_passes()
    message = deliver(smtp_server)[-1]
    assert message['Subject'] == '1 more notice about your Penstock account'
    assert 'Your Penstock account was deleted' in parts(message)['text/plain']


def test_simultaneous_events_to_one_address_let_exactly_10_through(user):
    count = 15  # within the 20 connections a process pools on PostgreSQL
    start = threading.Barrier(count)

    def event(number):
        with database.db.connection_context():
            start.wait(timeout=30)
            with database.write_transaction(exclusive=False):  # only the window's row lock
                mail.Email.tell('token.create', user, '203.0.113.9', last4=f'{number:04d}')

    threads = [threading.Thread(target=event, args=(number,)) for number in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    notices = [email for email in emails() if email.kind == 'token.create']
    assert len(notices) == count
    assert sum(email.summary_id is None for email in notices) == 10
    [summary] = [email for email in emails() if email.kind == mail.SUMMARY]
    assert {email.summary_id for email in notices} == {None, summary.id}
