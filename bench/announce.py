"""Issue 15's benchmark: queuing an announcement to 100,000 opted-in users (and past 10,000
more who have its topic off), as `flask --app app announce` does it: time, and the peak memory
of the process that queues. Target: within 10 s and 100 MB.

Users and their preferences are written in bulk (executemany) straight into a throwaway SQLite
database. The queuing runs in a fresh process (this script with --queue), so its peak resident
memory (VmHWM: the app imported, the database open, every batch queued) is the queuing's alone
and not the filling's. Prints the figures; exits 0 either way, unless the count is wrong.
Quick mode (BENCH_QUICK=1, see _common.py): 10,000 opted-in users.
"""
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.fernet import Fernet

from _common import judged, quick_or

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import database  # noqa: E402
import models  # noqa: E402  (Penstock itself, from the repository root)

OPTED_IN = quick_or(100_000, 10_000)
OPTED_OUT = OPTED_IN // 10
BATCH = 50_000
TARGET_SECONDS, TARGET_MB = 10, 100
TOPIC, SUBJECT, BODY = 'product_updates', 'Penstock news', 'Something new.\n\nThanks!'


def config(folder):
    return {'SECRET_KEY': 'bench secret key', 'GRAVATAR_ENABLED': False,
            'DATABASE_URL': f'sqlite:///{folder}/penstock.db',
            'DATABASE_PASSWORD_KEYS': Fernet.generate_key().decode(),
            'SESSION_COOKIE_SECURE': False}


def fill(count, opted_out):
    """`count` users with TOPIC on and `opted_out` with it off."""
    raw = database.db.obj
    created = models.utcnow().strftime('%Y-%m-%d %H:%M:%S.%f')
    tables = []
    for model, values in ((models.User, lambda n: {
            'id': f'u_{n:020d}', 'email': f'user{n}@example.com', 'handle': f'user{n}',
            'password_hash': 'x', 'status': 'accepted', 'created_at': created,
            'email_verified_at': created, 'version_id': 1, 'avatar_version': 1}),
            (models.Preferences, lambda n: {
                'user_id': f'u_{n:020d}', 'community_updates': False,
                'product_updates': n < count, 'tips_and_tricks': False, 'version_id': 1})):
        columns = [field.column_name for field in model._meta.sorted_fields]
        sql = (f'INSERT INTO "{model._meta.table_name}" ({", ".join(columns)}) '
               f'VALUES ({", ".join(["?"] * len(columns))})')
        tables.append((sql, columns, values))
    for first in range(0, count + opted_out, BATCH):
        numbers = range(first, min(first + BATCH, count + opted_out))
        with raw.atomic():
            for sql, columns, values in tables:
                raw.cursor().executemany(sql, [[values(n).get(c) for c in columns]
                                               for n in numbers])


def queue(folder):
    """In the fresh process: create the app as the command does, queue, report as JSON."""
    import announcements
    from app import create_app
    create_app(config(folder))
    before, peak_before = _status('VmRSS'), _status('VmHWM')
    with database.db.connection_context():
        started = time.perf_counter()
        count = announcements.announce(TOPIC, SUBJECT, BODY)
        seconds = time.perf_counter() - started
        started = time.perf_counter()
        again = announcements.announce(TOPIC, SUBJECT, BODY)
        rerun = time.perf_counter() - started
    print(json.dumps({'count': count, 'seconds': seconds, 'again': again, 'rerun': rerun,
                      'rss_before': before, 'peak_before': peak_before,
                      'peak': _status('VmHWM')}))


def _status(name):
    """A memory figure of this process from /proc/self/status, in MB."""
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith(name + ':'):
            return int(line.split()[1]) / 1024
    raise LookupError(name)


def main():
    from app import create_app
    with tempfile.TemporaryDirectory(prefix='penstock-bench-') as folder:
        create_app(config(folder))
        database.migrate(database.db.obj)
        started = time.perf_counter()
        with database.db.connection_context():
            fill(OPTED_IN, OPTED_OUT)
        filled = time.perf_counter() - started
        database.db.close()
        result = subprocess.run([sys.executable, __file__, '--queue', folder], check=True,
                                capture_output=True, text=True, env={**os.environ})
        figures = json.loads(result.stdout)
    assert figures['count'] == OPTED_IN and figures['again'] == 0, figures
    print(f'Announcement to {OPTED_IN:,} opted-in users ({OPTED_OUT:,} more opted out; '
          f'filled in {filled:.1f} s)')
    print(f'  queued {figures["count"]:,} messages in {figures["seconds"]:.2f} s '
          f'({figures["count"] / figures["seconds"]:,.0f}/s); '
          f're-run (a no-op) {figures["rerun"]:.2f} s')
    print(f'  peak memory of the queuing process {figures["peak"]:.0f} MB '
          f'(before queuing: {figures["rss_before"]:.0f} MB resident, '
          f'{figures["peak_before"]:.0f} MB peak)')
    met = figures['seconds'] <= TARGET_SECONDS and figures['peak'] <= TARGET_MB
    print(f'  target ≤ {TARGET_SECONDS} s and ≤ {TARGET_MB} MB: {judged(met)}')


if __name__ == '__main__':
    if sys.argv[1:2] == ['--queue']:
        queue(sys.argv[2])
    else:
        main()
