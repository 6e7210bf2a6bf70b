"""Failed-login limits hold across two app servers when their counters live in Redis
(RATELIMIT_STORAGE_URI=redis://…), and do not with the default per-process memory://, which
is why the shared store is needed. Runs on SQLite and on PostgreSQL.

Each test starts a throwaway Debian redis-server (PENSTOCK_REDIS_SERVER to use another); a
missing one fails the test rather than skipping it: `make test` installs it."""
import time
from contextlib import contextmanager, suppress

import pytest
import redis

import database
from tests.helpers import PASSWORD
from tests.servers import NO_MATCH, TOO_MANY, attempt_login, call, gunicorn, sign_up

pytestmark = pytest.mark.slow  # two gunicorn servers and a Redis

FAILURES_ALLOWED = 10  # LOGIN_FAILURES_PER_ACCOUNT in app.py: '10 per 10 minutes'
# Flask-Limiter asks a store that stopped answering again after 1, 2, 4… 32 s; throttle.py
# after STORE_RETRY (1 s).
RECOVERY_DEADLINE = 60  # seconds


def migrated(database_url):
    """Bring the test's database to the current schema, as `flask migrate` would."""
    connection = database.open_database(database_url)
    database.migrate(connection)
    connection.close()


@contextmanager
def two_servers(database_url, tmp_path):
    """Two gunicorn servers (2 sync workers each) on one migrated database, as two hosts
    behind a load balancer; they take RATELIMIT_STORAGE_URI from the environment."""
    migrated(database_url)
    with gunicorn(database_url, tmp_path / 'gunicorn-a.log', workers=2) as (a, _), \
            gunicorn(database_url, tmp_path / 'gunicorn-b.log', workers=2) as (b, _):
        yield a, b


def fail_half_on_each(a, b, handle):
    """FAILURES_ALLOWED wrong passwords for one account, half through each server, spelled
    as the handle on one and the email on the other; each is an ordinary refusal."""
    for number in range(FAILURES_ALLOWED):
        base, login = (a, handle) if number % 2 == 0 else (b, f'{handle}@example.com')
        assert attempt_login(base, login) == (401, NO_MATCH), (number, base)


def test_failed_logins_through_both_servers_share_one_limit_in_redis(
        tmp_path, database_url, redis_url, monkeypatch):
    monkeypatch.setenv('RATELIMIT_STORAGE_URI', redis_url)
    with two_servers(database_url, tmp_path) as (a, b):
        sign_up(a, 'target')
        sign_up(b, 'bystander')
        fail_half_on_each(a, b, 'target')

        assert attempt_login(a, 'target') == (429, TOO_MANY)
        # On the other server too, and even with the right password.
        assert attempt_login(b, 'target@example.com', PASSWORD) == (429, TOO_MANY)
        # The limit is the account's, not the servers': another account still logs in.
        assert attempt_login(a, 'bystander', PASSWORD) == (302, None)

    with redis.Redis.from_url(redis_url) as store:
        assert any(b'account:' in key for key in store.scan_iter())


def test_with_the_default_memory_storage_each_server_counts_alone(
        tmp_path, database_url, monkeypatch):
    """Why the Redis URI matters: the same split never reaches the limit on either server."""
    monkeypatch.delenv('RATELIMIT_STORAGE_URI', raising=False)
    with two_servers(database_url, tmp_path) as (a, b):
        sign_up(a, 'target')
        fail_half_on_each(a, b, 'target')

        assert attempt_login(b, 'target@example.com') == (401, NO_MATCH)
        assert attempt_login(a, 'target', PASSWORD) == (302, None)


def test_when_redis_is_down_logins_are_still_answered_and_limited_per_process(
        tmp_path, database_url, redis_url, monkeypatch):
    """Flask-Limiter falls back to counting in each process's memory: logins never 500."""
    monkeypatch.setenv('RATELIMIT_STORAGE_URI', redis_url)
    migrated(database_url)
    with gunicorn(database_url, tmp_path / 'gunicorn.log', workers=1) as (base, _):
        sign_up(base, 'target')
        assert attempt_login(base, 'target') == (401, NO_MATCH)
        with redis.Redis.from_url(redis_url) as store:
            with suppress(redis.ConnectionError):  # it may hang up before it answers
                store.shutdown(nosave=True)
            with pytest.raises(redis.ConnectionError):
                store.ping()
        assert attempt_login(base, 'target', PASSWORD) == (302, None)
        for _ in range(FAILURES_ALLOWED):
            assert attempt_login(base, 'target') == (401, NO_MATCH)
        assert attempt_login(base, 'target', PASSWORD) == (429, TOO_MANY)


def start_cli_login(base):
    """POST /api/v0/login/token, which a Flask-Limiter decorator limits ('30 per minute')."""
    return call(base, 'POST', '/api/v0/login/token')[0]


def counts_in(redis_url):
    """{key: count} of every counter in the Redis at `redis_url`."""
    with redis.Redis.from_url(redis_url) as store:
        return {key.decode(): int(store.get(key)) for key in store.scan_iter()}


def count_of(counts, part):
    """The one count whose key holds `part`, or None."""
    found = [count for key, count in counts.items() if part in key]
    assert len(found) <= 1, counts
    return found[0] if found else None


def test_when_redis_comes_back_after_an_outage_the_counts_go_to_it_again(
        tmp_path, database_url, redis_server, monkeypatch):
    """An outage is met without an error (the process counts in its memory meanwhile), and
    its end is noticed: throttle.py's counters (failed logins) and Flask-Limiter's decorators
    (the CLI's login requests) count in Redis again. This pins what Flask-Limiter does when
    its store goes and comes back, through a real server and a real Redis."""
    monkeypatch.setenv('RATELIMIT_STORAGE_URI', redis_server.url)
    migrated(database_url)
    with gunicorn(database_url, tmp_path / 'gunicorn.log', workers=1) as (base, _):
        sign_up(base, 'target')
        assert attempt_login(base, 'target') == (401, NO_MATCH)
        assert start_cli_login(base) == 201
        counts = counts_in(redis_server.url)
        assert count_of(counts, 'account:') == 1 and count_of(counts, 'login_start') == 1

        redis_server.stop()
        for _ in range(3):
            assert attempt_login(base, 'target') == (401, NO_MATCH)
            assert start_cli_login(base) == 201
        redis_server.start()  # empty: only what is counted from now on is in it

        deadline = time.monotonic() + RECOVERY_DEADLINE
        counts = counts_in(redis_server.url)
        while count_of(counts, 'account:') is None or count_of(counts, 'login_start') is None:
            assert time.monotonic() < deadline, f'Redis got no counts back: {counts}'
            assert attempt_login(base, 'target')[0] in (401, 429)
            assert start_cli_login(base) in (201, 429)
            counts = counts_in(redis_server.url)

        # And each request counts there from now on.
        counts = counts_in(redis_server.url)
        assert attempt_login(base, 'target') == (401, NO_MATCH)
        assert start_cli_login(base) == 201
        after = counts_in(redis_server.url)
        assert count_of(after, 'account:') == count_of(counts, 'account:') + 1
        assert count_of(after, 'login_start') == count_of(counts, 'login_start') + 1
