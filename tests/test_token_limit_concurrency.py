"""The two-token limit holds when 20 creates race through a multi-process server (on SQLite,
or PostgreSQL when the tests run there)."""
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from bs4 import BeautifulSoup

import database
from tests.servers import Browser, gunicorn, post_create

pytestmark = pytest.mark.slow  # a gunicorn server raced by 20 requests

REQUESTS = 20
LIMIT_REFUSAL = ('You already have 2 tokens, the most you can have at a time. '
                 'Delete one to create another.')


@pytest.fixture
def server(tmp_path, database_url):
    """gunicorn with 4 worker processes on a migrated database; yields (base URL, its URL)."""
    connection = database.open_database(database_url)
    database.migrate(connection)
    connection.close()
    with gunicorn(database_url, tmp_path / 'gunicorn.log') as (base, _process):
        yield base, database_url


def test_third_token_is_refused_under_concurrency(server):
    base, url = server
    person = Browser(base)
    csrf = person.csrf('/signup')
    status, _ = person.open('/signup', {'email': 'racer@example.com', 'handle': 'racer',
                                        'password': 'correct horse battery', 'csrf_token': csrf})
    assert status == 302
    path = '/user/racer/settings/tokens'
    csrf = person.csrf(path)
    cookie = person.cookie_header()

    start = threading.Barrier(REQUESTS, timeout=30)

    def race(number):
        start.wait()  # all 20 go at once
        return post_create(base, path, cookie, csrf, htmx=number % 2 == 0)

    with ThreadPoolExecutor(max_workers=REQUESTS) as pool:
        results = list(pool.map(race, range(REQUESTS)))

    statuses = sorted(status for status, _, _ in results)
    assert all(status < 500 for status in statuses), statuses
    created = [r for r in results if r[0] == 200]
    refused = [r for r in results if r[0] != 200]
    assert len(created) == 2, statuses
    for _status, _headers, body in created:
        secret_field = BeautifulSoup(body, 'html.parser').find('input', id='token-secret')
        assert secret_field['value'].startswith('pst_')
    for status, _headers, body in refused:  # in place for htmx, on the page for a form post
        assert status == 422
        error = BeautifulSoup(body, 'html.parser').find(id='new-token-reason')
        assert error.get_text(strip=True) == LIMIT_REFUSAL

    db = database.open_database(url)
    try:
        assert db.execute_sql('SELECT count(*) FROM token').fetchone() == (2,)
        assert db.execute_sql("SELECT count(*) FROM audit_record "
                              "WHERE action_type = 'token.create'").fetchone() == (2,)
    finally:
        db.close()
    status, body = person.open(path)
    rows = BeautifulSoup(body, 'html.parser').find(id='token-list').find_all('tr', id=True)
    assert len(rows) == 2
