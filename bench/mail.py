"""The mail worker's throughput (postman.py) against a bare smtplib loop, same run, same sink.

A local SMTP sink (aiosmtpd's Sink handler, in its own process, so it does not share this
one's interpreter) takes every message. The baseline is the least any sender of these
messages can do: one smtplib connection, each message built (postman.build, from rows read
beforehand) and sent, back to back. The worker does its real work for the same messages:
claim each from the outbox with a lease, build it, send it over its kept connection, record
it sent, on a throwaway SQLite database; so the ratio is the cost of the outbox. Rounds
alternate the two, so a noisy moment hits both alike; the figure is the median round's ratio
(worker messages per second / bare ones). Target: ≥ 0.8. Also printed, not judged: sending
the messages built beforehand (smtplib alone). Prints the figures; exits 0 either way.
Quick mode (BENCH_QUICK=1, see _common.py): 100 messages, 1 round.
"""
import datetime
import os
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.fernet import Fernet

from _common import judged, quick_or

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import addresses  # noqa: E402
import database  # noqa: E402
import mail  # noqa: E402
import models  # noqa: E402  (Penstock itself, from the repository root)
import postman  # noqa: E402
from app import create_app  # noqa: E402

MESSAGES = quick_or(2_000, 100)
ROUNDS = quick_or(5, 1)
TARGET = 0.8
LEASE = datetime.timedelta(seconds=300)
SINK_START_DEADLINE = 30  # seconds


def free_port():
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


def start_sink(port):
    """aiosmtpd's Sink (accepts and drops every message) on loopback, once it answers."""
    process = subprocess.Popen([sys.executable, '-m', 'aiosmtpd', '-n', '-l',
                                f'127.0.0.1:{port}', '-c', 'aiosmtpd.handlers.Sink'],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + SINK_START_DEADLINE
    while True:
        try:
            with smtplib.SMTP('127.0.0.1', port, timeout=5) as probe:
                probe.noop()
            return process
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise SystemExit('the aiosmtpd sink did not start')
            time.sleep(0.05)


def queue(users):
    """MESSAGES due System emails, spread over `users`, and the rows as the worker sees them."""
    # Ten users get every message: the flood rule (mail.FLOOD_LIMIT) would hold most of them
    # back for a summary, and sending, not collapsing, is what is measured here.
    mail.FLOOD_LIMIT = MESSAGES * ROUNDS
    with database.write_transaction():
        emails = [mail.Email.tell('token.create', users[n % len(users)], '203.0.113.9',
                                  last4='abcd') for n in range(MESSAGES)]
    return [mail.Email.get_by_id(each.id) for each in emails]


def bare(port, emails):
    """Seconds for a plain smtplib loop to build and send `emails` over one connection."""
    begin = time.perf_counter()
    with smtplib.SMTP('127.0.0.1', port) as connection:
        for each in emails:
            connection.send_message(postman.build(each))
    return time.perf_counter() - begin


def prebuilt(port, messages):
    """Seconds for smtplib alone to send `messages`, built beforehand."""
    begin = time.perf_counter()
    with smtplib.SMTP('127.0.0.1', port) as connection:
        for message in messages:
            connection.send_message(message)
    return time.perf_counter() - begin


def worker(port):
    """Seconds for the worker to send every due message; checks it sent them all."""
    sender = postman.SMTPTransport(f'smtp://127.0.0.1:{port}')
    begin = time.perf_counter()
    sent = 0
    while taken := postman.run_once(sender, LEASE):
        sent += taken
    sender.close()
    elapsed = time.perf_counter() - begin
    assert sent == MESSAGES, sent
    assert not mail.Email.select().where(mail.Email.status != 'sent').exists()
    return elapsed


def main():
    port = free_port()
    sink = start_sink(port)
    try:
        with tempfile.TemporaryDirectory(prefix='penstock-bench-') as folder:
            create_app({'SECRET_KEY': 'bench secret key', 'GRAVATAR_ENABLED': False,
                        'DATABASE_URL': f'sqlite:///{folder}/penstock.db',
                        'DATABASE_PASSWORD_KEYS': Fernet.generate_key().decode(),
                        'SESSION_COOKIE_SECURE': False})
            database.migrate(database.db.obj)
            rounds = []
            with database.db.connection_context():
                users = [addresses.mark_verified(  # mail to an unverified address waits
                    models.User.sign_up(f'u{n}@example.com', f'u{n}', 'bench password'))
                    for n in range(10)]
                for _ in range(ROUNDS):
                    emails = queue(users)
                    send_time = prebuilt(port, [postman.build(each) for each in emails])
                    bare_time = bare(port, emails)
                    worker_time = worker(port)  # the same messages, from the outbox
                    rounds.append((send_time, bare_time, worker_time))
            database.db.close()
    finally:
        sink.terminate()
        sink.wait(timeout=10)

    print('Mail benchmark (bench/mail.py): the worker against a bare smtplib loop, one sink')
    print(f'{os.cpu_count()} CPUs, load average ' + '{:.2f} {:.2f} {:.2f}'.format(
        *os.getloadavg()) + f'; {MESSAGES:,} messages a round, {ROUNDS} round(s)')
    ratios = []
    for number, (send_time, bare_time, worker_time) in enumerate(rounds, 1):
        ratios.append(bare_time / worker_time)
        print(f'  round {number}: prebuilt {MESSAGES / send_time:5.0f} msg/s, bare (build and '
              f'send) {MESSAGES / bare_time:5.0f} msg/s, worker {MESSAGES / worker_time:5.0f} '
              f'msg/s, ratio {ratios[-1]:.3f}')
    ratio = statistics.median(ratios)
    print()
    print(f'  worker / bare (median round) = {ratio:.3f}  '
          f'(target ≥ {TARGET}: {judged(ratio >= TARGET)})')


if __name__ == '__main__':
    sys.exit(main())
