"""Password guessing is throttled without locking the owner out: every attempt is counted
before its password is checked (simultaneous ones too, through a real threaded server), a
browser that has logged in before keeps its own allowance (the device cookie), failed sign-ups
are counted per IP, and checked wrong passwords leave a bounded trace in the audit log."""
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from itsdangerous import URLSafeTimedSerializer

import credentials
import database
import models
from app import APP_WIDE_LIMITS, create_app
from tests.conftest import TEST_PASSWORD_KEY, database_dump
from tests.helpers import PASSWORD, csrf_token, html, log_in, make_user
from tests.servers import (
    NO_MATCH,
    TOO_MANY,
    Browser,
    attempt_login,
    gunicorn,
    sign_up as sign_up_through,
)

FAILURES_ALLOWED = 10  # LOGIN_FAILURES_PER_ACCOUNT and LOGIN_FAILURES_PER_DEVICE in app.py
DEVICE_COOKIE = '__Host-penstock_device'  # the app's secure cookies are on by default


def fail_to_log_in(client, login, times):
    for _ in range(times):
        assert log_in(client, login, 'wrong password').status_code == 401


def log_out(browser):
    browser.post('/logout', data={'csrf_token': csrf_token(browser, '/')})
    assert browser.get('/').status_code == 302  # to the login page


def trusted_browser(app, login):
    """A browser that has logged in to `login` before, then logged out."""
    browser = app.test_client()
    assert log_in(browser, login).status_code == 302
    log_out(browser)
    return browser


def failed_login_records(user_id=None):
    with database.db.connection_context():
        query = models.AuditRecord.select().where(
            models.AuditRecord.action_type == 'user.login.failed')
        if user_id:
            query = query.where(models.AuditRecord.identity == user_id)
        return list(query)


def test_the_owners_browser_logs_in_while_the_account_is_under_attack(app, user):
    owner = trusted_browser(app, 'alice')
    attacker = app.test_client()
    fail_to_log_in(attacker, 'alice', FAILURES_ALLOWED)
    assert log_in(attacker, 'alice', 'wrong password').status_code == 429
    # Without the device cookie even the right password waits: that is the design.
    assert log_in(app.test_client(), 'alice@example.com').status_code == 429

    response = log_in(owner, 'alice')
    assert response.status_code == 302
    assert response.headers['Location'] == '/'


def test_a_device_cookie_of_another_account_or_forged_counts_as_untrusted(app, user):
    make_user('bob@example.com', 'bob')
    bobs_browser = trusted_browser(app, 'bob')
    fail_to_log_in(app.test_client(), 'alice', FAILURES_ALLOWED)
    assert log_in(bobs_browser, 'alice').status_code == 429

    with database.db.connection_context():
        alice_id = models.User.get(models.User.handle == 'alice').id
    forged = URLSafeTimedSerializer('not the secret key', salt='penstock-device-cookie').dumps(
        {'account': alice_id, 'device': 'guessed'})
    forger = app.test_client()
    forger.set_cookie(DEVICE_COOKIE, forged)
    assert log_in(forger, 'alice').status_code == 429


def test_a_device_cookie_is_locked_out_by_its_own_failures_only(app, user):
    owner = trusted_browser(app, 'alice')
    fail_to_log_in(owner, 'alice', FAILURES_ALLOWED)
    response = log_in(owner, 'alice')
    assert response.status_code == 429
    assert html(response).find(class_='form-error').get_text(strip=True) == TOO_MANY
    assert int(response.headers['Retry-After']) > 0
    # Its failures were its own: the account's other browsers are not blocked by them.
    assert log_in(app.test_client(), 'alice').status_code == 302


def test_failures_at_the_ip_ceiling_do_not_block_a_device_cookie_login_behind_it(app, user):
    app.config['LOGIN_FAILURES_PER_IP'] = '5 per 10 minutes'  # 100 in production
    owner = trusted_browser(app, 'alice')
    neighbour = app.test_client()  # the same address (an office, a classroom)
    for number in range(5):
        assert log_in(neighbour, f'nobody{number}', 'wrong password').status_code == 401
    assert log_in(neighbour, 'nobody-else', 'wrong password').status_code == 429
    assert log_in(app.test_client(), 'alice').status_code == 429

    assert log_in(owner, 'alice').status_code == 302


def test_a_strangers_failed_logins_do_not_block_confirming_the_password(app, client,
                                                                        logged_in):
    fail_to_log_in(app.test_client(), 'alice', FAILURES_ALLOWED)
    response = client.post('/reauth', data={'password': PASSWORD,
                                            'csrf_token': csrf_token(client, '/reauth')})
    assert response.status_code == 303


def device_cookie(response, name):
    return next(c for c in response.headers.getlist('Set-Cookie') if c.startswith(name + '='))


def test_a_login_issues_a_new_long_lived_host_only_device_cookie(app, user):
    browser = app.test_client()
    cookie = device_cookie(log_in(browser, 'alice'), DEVICE_COOKIE)
    assert all(part in cookie.split('; ') for part in (
        'Secure', 'HttpOnly', 'SameSite=Lax', 'Path=/', 'Max-Age=31536000'))
    assert 'Domain=' not in cookie
    value = browser.get_cookie(DEVICE_COOKIE).value
    log_out(browser)
    assert log_in(browser, 'alice').status_code == 302
    assert browser.get_cookie(DEVICE_COOKIE).value != value


def test_failed_signups_are_throttled_per_ip(app, user):
    client = app.test_client()
    token = csrf_token(client, '/signup')
    form = {'email': 'alice@example.com', 'handle': 'someone', 'password': PASSWORD,
            'csrf_token': token}
    for _ in range(30):  # SIGNUP_FAILURES_PER_IP
        assert client.post('/signup', data=form).status_code == 422
    response = client.post('/signup', data=dict(form, email='new@example.com'))
    assert response.status_code == 429
    assert html(response).find(class_='form-error').get_text(strip=True) == TOO_MANY
    assert int(response.headers['Retry-After']) > 0
    with database.db.connection_context():
        assert models.User.select().count() == 1


@pytest.mark.slow  # 60 signups, each hashing a password
def test_successful_signups_from_one_ip_are_not_limited_below_60_a_minute(app):
    for number in range(60):
        client = app.test_client()
        response = client.post('/signup', data={
            'email': f'person{number}@example.com', 'handle': f'person{number}',
            'password': PASSWORD, 'csrf_token': csrf_token(client, '/signup')})
        assert response.status_code == 302, number
    client = app.test_client()
    response = client.post('/signup', data={
        'email': 'one-more@example.com', 'handle': 'one-more', 'password': PASSWORD,
        'csrf_token': csrf_token(client, '/signup')})
    assert response.status_code == 429


def test_a_wrong_password_is_audited_without_the_password(app, user):
    typed = 'Tr0ub4dor-guess-xyzzy'
    assert log_in(app.test_client(), 'alice@example.com', typed).status_code == 401
    assert log_in(app.test_client(), 'nobody', typed).status_code == 401
    [record] = failed_login_records()
    assert (record.identity_id, record.actor_id, record.target_id) == (user.id,) * 3
    assert record.actor_ip == '127.0.0.1' and record.data == '{}'
    assert 'xyzzy' not in database_dump()


def test_a_wrong_password_when_reauthenticating_is_audited_with_its_session(client, logged_in):
    token = csrf_token(client, '/reauth')
    response = client.post('/reauth', data={'password': 'Tr0ub4dor-guess-xyzzy',
                                            'csrf_token': token})
    assert response.status_code == 401
    [record] = failed_login_records(logged_in.id)
    with database.db.connection_context():
        [session] = credentials.Session.select().where(credentials.Session.user == logged_in.id)
    assert record.data == f'{{"session_id": "{session.id}"}}'


def test_a_flood_of_wrong_passwords_leaves_only_the_checked_ones_in_the_log(app, user):
    for _ in range(40):
        log_in(app.test_client(), 'alice', 'wrong password')
    assert len(failed_login_records()) == FAILURES_ALLOWED


@pytest.fixture
def threaded_server(tmp_path, database_url, redis_url, monkeypatch):
    """gunicorn with 2 workers of 16 threads on a migrated database, counting in one Redis."""
    monkeypatch.setenv('RATELIMIT_STORAGE_URI', redis_url)
    connection = database.open_database(database_url)
    database.migrate(connection)
    connection.close()
    with gunicorn(database_url, tmp_path / 'gunicorn.log', workers=2, threads=16) as (base, _):
        yield base, database_url


def all_at_once(count, attempt):
    """Run attempt(number) in `count` threads released together; their results."""
    start = threading.Barrier(count, timeout=30)

    def go(number):
        start.wait()
        return attempt(number)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(go, range(count)))


def count_failed_records(url):
    db = database.open_database(url)
    try:
        return db.execute_sql("SELECT count(*) FROM audit_record "
                              "WHERE action_type = 'user.login.failed'").fetchone()[0]
    finally:
        db.close()


@pytest.mark.slow  # gunicorn raced by many threads
def test_simultaneous_wrong_passwords_are_checked_at_most_ten_times(threaded_server):
    base, url = threaded_server
    sign_up_through(base, 'target')
    browsers = [Browser(base) for _ in range(30)]
    tokens = [browser.csrf('/login') for browser in browsers]

    def attempt(number):
        status, _ = browsers[number].open('/login', {'email': 'target', 'password': 'wrong',
                                                     'csrf_token': tokens[number]})
        return status

    statuses = all_at_once(30, attempt)
    assert sorted(statuses) == [401] * FAILURES_ALLOWED + [429] * 20, (
        f'{statuses.count(401)} of 30 passwords checked: {sorted(statuses)}')
    assert count_failed_records(url) == FAILURES_ALLOWED
    assert attempt_login(base, 'target') == (429, TOO_MANY)


@pytest.mark.slow  # gunicorn raced by many threads
def test_simultaneous_wrong_passwords_when_reauthenticating_are_checked_at_most_ten_times(
        threaded_server):
    base, url = threaded_server
    person = sign_up_through(base, 'target')
    token = person.csrf('/reauth')

    def attempt(_number):
        status, _ = person.open('/reauth', {'password': 'wrong', 'csrf_token': token})
        return status

    statuses = all_at_once(25, attempt)
    assert sorted(statuses) == [401] * FAILURES_ALLOWED + [429] * 15, (
        f'{statuses.count(401)} of 25 passwords checked: {sorted(statuses)}')
    assert count_failed_records(url) == FAILURES_ALLOWED
    # A stranger's failures never touch the session's allowance, nor its failures the login's.
    assert attempt_login(base, 'target') == (401, NO_MATCH)


@pytest.mark.parametrize('name', APP_WIDE_LIMITS)
def test_a_rate_limit_for_every_request_is_refused_at_startup(database_url, name):
    """Flask-Limiter's before-request check is exempted (app._init_limiter), so a limit it
    alone would apply must not be set and then silently not applied."""
    with pytest.raises(RuntimeError, match=name):
        create_app({'SECRET_KEY': 'x', 'DATABASE_URL': database_url,
                    'DATABASE_PASSWORD_KEYS': TEST_PASSWORD_KEY, name: '100 per minute'})
