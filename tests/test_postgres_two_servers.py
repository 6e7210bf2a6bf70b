"""Two app servers on one PostgreSQL database act as one: a login, the token limit and a
reset of authentication hold across both, because all of it lives in the database; and two
propagation workers on it never work on one user's jobs on one server at once.

Runs only when the tests run on PostgreSQL (PENSTOCK_TEST_DATABASE); SQLite is one machine."""
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from bs4 import BeautifulSoup

import database
import workspaces
from tests.conftest import ON_POSTGRES
from tests.helpers import LEASE, PASSWORD, provision_and_rotate
from tests.servers import Browser, gunicorn, post_create, sign_up

pytestmark = [pytest.mark.slow,  # two gunicorn servers
              pytest.mark.skipif(not ON_POSTGRES, reason='needs PostgreSQL: set '
                                 'PENSTOCK_TEST_DATABASE (make test-postgres)')]
RACERS = 10


@pytest.fixture
def servers(tmp_path, database_url):
    """Two gunicorn servers (2 sync workers each) on the same migrated database, as two
    hosts behind a load balancer would be; yields their base URLs."""
    with gunicorn(database_url, tmp_path / 'gunicorn-a.log', workers=2) as (a, _), \
            gunicorn(database_url, tmp_path / 'gunicorn-b.log', workers=2) as (b, _):
        yield [a, b]


def on(base, browser):
    """The same browser (its cookies) pointed at another server."""
    other = Browser(base)
    other.jar = browser.jar
    other.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(browser.jar),
                                               Browser._NoRedirect)
    return other


def log_in(base, handle):
    person = Browser(base)
    status, _ = person.open('/login', {'email': handle, 'password': PASSWORD,
                                       'csrf_token': person.csrf('/login')})
    assert status == 302
    return person


def shows_settings(person, handle):
    """True when `person` gets their Profile page, False when sent to log in."""
    status, body = person.open(f'/user/{handle}/settings/profile')
    if status == 302:
        return False
    assert status == 200, status
    return BeautifulSoup(body, 'html.parser').find('input', id='display_name') is not None


def api_actor(base, secret):
    request = urllib.request.Request(base + '/api/v0/actor',
                                     headers={'Authorization': f'Bearer {secret}'})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_a_login_on_one_server_is_a_login_on_the_other_and_so_is_a_logout(servers):
    a, b = servers
    person = sign_up(a, 'wanderer')
    assert shows_settings(person, 'wanderer')
    there = on(b, person)
    assert shows_settings(there, 'wanderer')
    cookie = person.cookie_header()

    status, _ = there.open('/logout', {'csrf_token': there.csrf('/user/wanderer/settings/profile')})
    assert status == 302
    # The cookie from before the logout, replayed on the first server, no longer logs in.
    stale = Browser(a)
    stale.opener.addheaders = [('Cookie', cookie)]
    assert not shows_settings(stale, 'wanderer')


def test_the_token_limit_holds_when_creates_race_through_both_servers(servers):
    a, b = servers
    person = sign_up(a, 'racer')
    path = '/user/racer/settings/tokens'
    csrf = person.csrf(path)
    cookie = person.cookie_header()
    start = threading.Barrier(RACERS, timeout=30)

    def race(number):
        start.wait()
        return post_create(servers[number % 2], path, cookie, csrf, htmx=True)

    with ThreadPoolExecutor(max_workers=RACERS) as pool:
        results = list(pool.map(race, range(RACERS)))

    statuses = sorted(status for status, _, _ in results)
    assert statuses.count(200) == 2 and statuses.count(422) == RACERS - 2, statuses
    for server in (a, b):
        status, body = on(server, person).open(path)
        assert status == 200
        rows = BeautifulSoup(body, 'html.parser').find(id='token-list').find_all('tr', id=True)
        assert len(rows) == 2


def test_reset_authentication_on_one_server_ends_sessions_and_tokens_on_the_other(servers):
    a, b = servers
    first = sign_up(a, 'resetter')
    second = log_in(b, 'resetter')  # another browser, on the other server
    tokens = '/user/resetter/settings/tokens'
    csrf = second.csrf(tokens)  # first: fetching it may renew the session cookie
    status, _, body = post_create(b, tokens, second.cookie_header(), csrf, htmx=True)
    assert status == 200
    secret = BeautifulSoup(body, 'html.parser').find('input', id='token-secret')['value']
    assert api_actor(a, secret) == 200 and api_actor(b, secret) == 200

    advanced = '/user/resetter/settings/advanced'
    status, _ = first.open(advanced + '/reset-authentication',
                           {'csrf_token': first.csrf(advanced)})
    assert status == 303

    assert not shows_settings(second, 'resetter')
    assert not shows_settings(on(a, second), 'resetter')
    assert api_actor(a, secret) == 401 and api_actor(b, secret) == 401


def test_two_workers_claiming_at_once_never_hold_jobs_of_one_user_on_one_server(user, bob):
    """A worker whose claim is not committed yet still keeps a second worker (another host)
    off that user's jobs on that server: the second skips its locked rows rather than waiting
    or doubling up."""
    # three pending jobs of each user on the one server
    provision_and_rotate(user, 'analytics', 'staging')
    provision_and_rotate(bob, 'reports', 'archive')
    first_claimed, second_done = threading.Event(), threading.Event()
    claims = {}

    def first_worker():
        with database.db.connection_context(), database.db.atomic():  # commit held back
            claims['first'] = workspaces.PropagationJob.claim(LEASE)
            first_claimed.set()
            assert second_done.wait(30)

    def second_worker():
        assert first_claimed.wait(30)
        with database.db.connection_context():
            claims['second'] = workspaces.PropagationJob.claim(LEASE)
            claims['third'] = workspaces.PropagationJob.claim(LEASE)
        second_done.set()

    threads = [threading.Thread(target=first_worker), threading.Thread(target=second_worker)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    first, second, third = claims['first'], claims['second'], claims['third']
    assert first is not None and first.user_id == user.id
    # The next due jobs are Alice's too: the second worker passed them over, and did not wait
    # (it was done while the first one's claim was still uncommitted).
    assert second is None and third is None
    with database.db.connection_context():  # the first claim is committed: Bob's turn
        fourth = workspaces.PropagationJob.claim(LEASE)
        assert fourth is not None and fourth.user_id == bob.id
        assert workspaces.PropagationJob.claim(LEASE) is None
