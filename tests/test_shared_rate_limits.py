"""Failed-login limits hold across two app servers when their counters live in Redis
(RATELIMIT_STORAGE_URI=redis://…), and do not with the default per-process memory://, which
is why the shared store is needed. Runs on SQLite and on PostgreSQL.

Each test starts a throwaway Debian redis-server (PENSTOCK_REDIS_SERVER to use another); a
missing one fails the test rather than skipping it: `make test` installs it."""
from contextlib import contextmanager, suppress

import pytest
import redis

import database
from tests.helpers import PASSWORD
from tests.servers import NO_MATCH, TOO_MANY, attempt_login, gunicorn, sign_up

pytestmark = pytest.mark.slow  # two gunicorn servers and a Redis

FAILURES_ALLOWED = 10  # LOGIN_FAILURES_PER_ACCOUNT in app.py: '10 per 10 minutes'


@contextmanager
def two_servers(database_url, tmp_path):
    """Two gunicorn servers (2 sync workers each) on one migrated database, as two hosts
    behind a load balancer; they take RATELIMIT_STORAGE_URI from the environment."""
    connection = database.open_database(database_url)
    database.migrate(connection)
    connection.close()
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
    connection = database.open_database(database_url)
    database.migrate(connection)
    connection.close()
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
