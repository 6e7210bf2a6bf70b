"""A database that stays locked past its busy timeout: a 503 with Retry-After and a plain
message (under /api/, the API's error object), never a 500 or "database is locked"; nothing is
written, and the same request goes through once the lock is gone.

SQLite only: there a writer waits for the one write lock at most the busy timeout and then
fails. PostgreSQL has no such timeout here: its writers queue on row and advisory locks."""
import sqlite3
import threading
import time
from contextlib import closing, contextmanager

import pytest
from peewee import OperationalError

import credentials
import database
import models
from app import create_app
from tests.conftest import TEST_PASSWORD_KEY, sqlite_only
from tests.helpers import HTMX, csrf_token, html

pytestmark = sqlite_only
BUSY = 'Penstock is busy. Try again in a moment; nothing was changed.'
PROFILE = '/user/alice/settings/profile'


@pytest.fixture
def database_url(make_database_url):
    """This test's database, where a write waits at most 50 ms for another's lock."""
    return make_database_url() + '?timeout=0.05'


@contextmanager
def write_lock(database_url):
    """Another connection holding SQLite's write lock, as a long write elsewhere would."""
    path = database_url.removeprefix('sqlite:///').partition('?')[0]
    with closing(sqlite3.connect(path, isolation_level=None)) as other:
        other.execute('BEGIN IMMEDIATE')
        try:
            yield
        finally:
            other.execute('ROLLBACK')


def display_name_and_audit(user):
    with database.db.connection_context():
        return (models.User.get_by_id(user.id).display_name,
                models.AuditRecord.select().count())


def assert_busy_page(response):
    assert response.status_code == 503
    assert response.headers['Retry-After'] == '1'
    page = html(response)
    assert page.find('h1').get_text(strip=True) == 'Penstock is busy'
    assert page.find('p', role='alert').get_text(strip=True) == BUSY


@pytest.mark.parametrize('headers', [{}, HTMX], ids=['form', 'htmx'])
def test_a_form_post_on_a_locked_database_is_a_503_and_goes_through_once_it_is_free(
        app, client, logged_in, database_url, headers):
    before = display_name_and_audit(logged_in)
    form = {'display_name': 'Alice Liddell', 'csrf_token': csrf_token(client, PROFILE)}
    with write_lock(database_url):
        response = client.post(PROFILE, data=form, headers=headers)
    assert_busy_page(response)
    assert display_name_and_audit(logged_in) == before

    response = client.post(PROFILE, data=form, headers=headers)
    assert response.status_code == (200 if headers else 303)
    assert display_name_and_audit(logged_in) == ('Alice Liddell', before[1] + 1)


def test_an_api_write_on_a_locked_database_is_a_503_error_object_and_goes_through_once_it_is_free(
        app, user, database_url):
    with database.db.connection_context():
        _, secret = credentials.Token.issue(user)
    before = display_name_and_audit(user)
    client = app.test_client()

    def rename():
        return client.patch('/api/v0/user/alice', json={'display_name': 'Alice Liddell'},
                            headers={'Authorization': f'Bearer {secret}'})

    with write_lock(database_url):
        response = rename()
    assert response.status_code == 503
    assert response.headers['Retry-After'] == '1'
    error = response.get_json()
    assert (error['status'], error['title'], error['detail']) == (
        503, 'Service Unavailable', BUSY)
    assert display_name_and_audit(user) == before

    response = rename()
    assert response.status_code == 200
    assert response.get_json()['display_name'] == 'Alice Liddell'
    assert display_name_and_audit(user) == ('Alice Liddell', before[1] + 1)


def test_a_lock_met_while_the_session_is_being_touched_is_a_503_page_too(
        app, client, logged_in, database_url):
    """The session row is written at most once a minute; when that write meets the lock,
    the busy page does not try to load the user again."""
    with database.db.connection_context():
        credentials.Session.update(
            last_seen_at=models.utcnow() - credentials.SESSION_TOUCH_EVERY * 2).execute()
    with write_lock(database_url):
        response = client.get(PROFILE)
    assert_busy_page(response)
    assert html(response).find(id='topbar') is None  # as to a visitor: no user was loaded

    response = client.get(PROFILE)
    assert response.status_code == 200
    assert html(response).find(id='topbar') is not None


def test_other_database_errors_are_not_taken_for_a_busy_database(app, client, logged_in,
                                                                 database_url):
    path = database_url.removeprefix('sqlite:///').partition('?')[0]
    with closing(sqlite3.connect(path, isolation_level=None)) as other:
        other.execute('DROP TABLE preferences')
    with pytest.raises(OperationalError, match='no such table: preferences'):
        client.get('/user/alice/settings/notifications')


@pytest.mark.parametrize('timeout', ['soon', '-1', '', 'nan', '7200'])
def test_a_busy_timeout_that_is_not_a_number_of_seconds_is_refused_plainly(tmp_path, timeout):
    with pytest.raises(ValueError, match=r'^DATABASE_URL: timeout is a number of seconds from '
                                         r'0 to 3600 \(like 5 or 0\.5\), not '):
        create_app({'SECRET_KEY': 'x', 'DATABASE_PASSWORD_KEYS': TEST_PASSWORD_KEY,
                    'DATABASE_URL': f'sqlite:///{tmp_path}/penstock.db?timeout={timeout}'})


def test_write_transactions_take_turns_rather_than_time_out(app, user):
    """Two read-modify-write transactions at once: the second waits on the writer file lock
    for as long as the first takes (here far past the 50 ms busy timeout) instead of failing
    with "database is locked", and then sees what the first wrote."""
    first_in, second_waiting, done = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def first():
        with database.db.connection_context(), database.write_transaction():
            models.Preferences.change(user, {'tips_and_tricks': True})
            first_in.set()
            done.wait(10)

    def second():
        first_in.wait(10)
        with database.db.connection_context():
            second_waiting.set()
            with database.write_transaction():
                seen['tips'] = models.Preferences.for_user(user.id).tips_and_tricks
                models.Preferences.change(user, {'community_updates': True})

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    assert second_waiting.wait(10)
    time.sleep(0.3)  # the second now waits past its busy timeout, six times over
    done.set()
    for thread in threads:
        thread.join(10)
    assert seen == {'tips': True}
    with database.db.connection_context():
        preferences = models.Preferences.for_user(user.id)
    assert preferences.tips_and_tricks and preferences.community_updates
