"""Benchmark 3 of issue 6: the Audit Log's page 1 and page 1,000 with 1,000 and 1,000,000
records for the user, rendered through the real view by a logged-in client, same run.

Records are written in bulk (executemany in transactions of BATCH rows) straight into a
throwaway SQLite database. Page 1,000 is reached as Load more reaches it, by the keyset
cursor (created_at, id) of the last record of page 999, built from the data; a user with
1,000 records has only 1,000 / 50 = 20 pages, so for them the deepest page is the last.
Target: all four times within 1.3× of each other. Prints the figures; exits 0 either way.
Quick mode (BENCH_QUICK=1, see _common.py): 20,000 records instead of 1,000,000, 3 renders.
"""
import datetime
import os
import re
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

from cryptography.fernet import Fernet

from _common import judged, quick_or

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import database  # noqa: E402
import models  # noqa: E402  (Penstock itself, from the repository root)
from app import create_app  # noqa: E402
from views import encode_cursor  # noqa: E402
from views.audit import PAGE_SIZE  # noqa: E402

SIZES = (1_000, quick_or(1_000_000, 20_000))
DEEP_PAGE = 1_000
BATCH = 50_000
REPEATS = quick_or(30, 3)
TARGET = 1.3
PASSWORD = 'bench password'
ACTIONS = ('user.update', 'token.create', 'token.delete', 'user.preferences.update',
           'user.login')
COLUMNS = [field.column_name for field in models.AuditRecord._meta.sorted_fields]


def fill(user, count):
    """Give `user` exactly `count` audit records, one a second apart, ending now."""
    raw = database.db.obj
    have = models.AuditRecord.select().where(models.AuditRecord.identity == user).count()
    start = models.utcnow() - datetime.timedelta(seconds=count + 10)
    sql = (f'INSERT INTO audit_record ({", ".join(COLUMNS)}) '
           f'VALUES ({", ".join(["?"] * len(COLUMNS))})')
    fixed = {'identity_id': user.id, 'identity_handle': user.handle, 'actor_id': user.id,
             'actor_handle': user.handle, 'actor_display_name': None,
             'actor_ip': '127.0.0.1', 'target_id': user.id, 'target_handle': user.handle,
             'data': '{"display_name": {"new": "New", "old": "Old"}}'}
    template = [fixed.get(column) for column in COLUMNS]
    where = {name: COLUMNS.index(name) for name in ('id', 'action_type', 'created_at')}
    # A large page cache for the load: 1M random ids make the primary key's inserts random.
    raw.execute_sql('PRAGMA cache_size = -262144')
    for first in range(0, count - have, BATCH):
        rows = []
        for number in range(first, min(first + BATCH, count - have)):
            row = template[:]
            row[where['id']] = 'a_' + secrets.token_hex(10)
            row[where['action_type']] = ACTIONS[number % len(ACTIONS)]
            row[where['created_at']] = (start + datetime.timedelta(
                seconds=number, microseconds=1)).strftime('%Y-%m-%d %H:%M:%S.%f')
            rows.append(row)
        with raw.atomic():
            raw.cursor().executemany(sql, rows)
    raw.execute_sql('PRAGMA cache_size = -2000')


def cursor_before(user, page):
    """The Load more cursor that leads to `page` (None for page 1): the (created_at, id) of
    the last record on the page before, read from the data by its position."""
    if page == 1:
        return None
    record = (models.AuditRecord.select(models.AuditRecord.created_at, models.AuditRecord.id)
              .where(models.AuditRecord.identity == user)
              .order_by(models.AuditRecord.created_at.desc(), models.AuditRecord.id.desc())
              .offset((page - 1) * PAGE_SIZE - 1).first())
    return record.created_at, record.id


def log_in(client, handle):
    page = client.get('/login').get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    response = client.post('/login', data={'email': handle, 'password': PASSWORD,
                                           'csrf_token': token})
    assert response.status_code == 302, response.status_code


def main():
    with tempfile.TemporaryDirectory(prefix='penstock-bench-') as folder:
        app = create_app({'SECRET_KEY': 'bench secret key', 'GRAVATAR_ENABLED': False,
                          'DATABASE_URL': f'sqlite:///{folder}/penstock.db',
                          'DATABASE_PASSWORD_KEYS': Fernet.generate_key().decode(),
                          'SESSION_COOKIE_SECURE': False})
        database.migrate(database.db.obj)
        cases, clients, cursors = {}, {}, {}
        started = time.perf_counter()
        with database.db.connection_context():
            for count in SIZES:
                user = models.User.sign_up(f'u{count}@example.com', f'u{count}', PASSWORD)
                fill(user, count)
                assert models.AuditRecord.select().where(
                    models.AuditRecord.identity == user).count() == count
                last = -(-count // PAGE_SIZE)
                for page in (1, min(DEEP_PAGE, last)):
                    label = f'page {page:,}' + (' (the last)' if page == last else '')
                    cursors[f'{count:>9,} records, {label}'] = (
                        user.handle, cursor_before(user, page))
        with app.test_request_context():  # encode_cursor signs with the app's key
            for name, (handle, cursor) in cursors.items():
                query = f'?after={encode_cursor(cursor)}' if cursor else ''
                cases[name] = (handle, f'/user/{handle}/settings/audit{query}')
        generated = time.perf_counter() - started
        for handle, _ in cases.values():
            if handle not in clients:
                clients[handle] = app.test_client()
                log_in(clients[handle], handle)
        times = {name: [] for name in cases}
        for _ in range(3):  # warm-up
            for name, (handle, url) in cases.items():
                clients[handle].get(url)
        for _ in range(REPEATS):  # interleaved, so a noisy moment hits every case alike
            for name, (handle, url) in cases.items():
                begin = time.perf_counter()
                response = clients[handle].get(url)
                times[name].append(time.perf_counter() - begin)
                assert response.status_code == 200, (url, response.status_code)
                assert response.get_data(as_text=True).count('data-record=') >= PAGE_SIZE, url
        database.db.close()

    print('Audit Log benchmark (bench/audit.py): the real view, full page, logged-in client')
    print(f'{os.cpu_count()} CPUs, load average ' + '{:.2f} {:.2f} {:.2f}'.format(
        *os.getloadavg()) + f'; {sum(SIZES):,} records generated in {generated:.1f} s')
    print(f'Time: median of {REPEATS} interleaved renders after 3 warm-ups; {PAGE_SIZE} rows '
          'a page.')
    medians = {name: statistics.median(values) * 1000 for name, values in times.items()}
    for name, value in medians.items():
        print(f'  {name:44} {value:7.2f} ms')
    ratio = max(medians.values()) / min(medians.values())
    print()
    print(f'  slowest / fastest of the four = {ratio:.2f}×  '
          f'(target ≤ {TARGET}×: {judged(ratio <= TARGET)})')


if __name__ == '__main__':
    sys.exit(main())
