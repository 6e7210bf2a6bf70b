"""Fixtures for the real-browser tests: a live Penstock server and one shared Chromium."""
import os
import secrets
import threading
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright
from werkzeug.serving import make_server

import database
import propagation
from app import create_app
from tests.browser.helpers import Person
from tests.conftest import ON_POSTGRES, TEST_PASSWORD_KEY, postgres_admin, postgres_url
from tests.helpers import run_jobs

ROOT = Path(__file__).resolve().parents[2]
AXE_SOURCE = ROOT / 'node_modules' / 'axe-core' / 'axe.min.js'
CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync', '--no-first-run']


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marks
def pytest_collection_modifyitems(items):
    """Mark every test in this directory `browser`: `make check` leaves Chromium out by it.
    The hook sees the whole run's items, not only this directory's."""
    here = Path(__file__).resolve().parent
    for item in items:
        if item.path.is_relative_to(here):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope='session')
def browser():
    """One headless Chromium for the whole run; Debian's, since playwright cannot fetch one."""
    executable = os.environ.get('PENSTOCK_CHROMIUM', '/usr/bin/chromium')
    if not os.access(executable, os.X_OK):
        pytest.fail(f'Chromium not found at {executable} (set PENSTOCK_CHROMIUM)')
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True,
                                             args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def buffered(app):
    """`app` with every response body read and closed before it is returned.

    Werkzeug's development server closes a response only after draining the socket, which
    raises when a browser has reset the connection (it does when a test closes a page while
    the favicon loads); the open static file then surfaces as a ResourceWarning in whichever
    test runs next."""
    def wsgi(environ, start_response):
        body = app(environ, start_response)
        try:
            return [b''.join(body)]
        finally:
            if hasattr(body, 'close'):
                body.close()
    return wsgi


@pytest.fixture(scope='module')
def live_database_url(tmp_path_factory, _postgres_template):
    """The live server's own fresh database: a SQLite file, or in a PostgreSQL run a copy of
    the migrated template on the test server, dropped after the module."""
    if not ON_POSTGRES:
        yield f"sqlite:///{tmp_path_factory.mktemp('browser') / 'penstock.db'}"
        return
    name = f'penstock_browser_{os.getpid()}_{secrets.token_hex(6)}'
    postgres_admin(f'CREATE DATABASE {name} TEMPLATE {_postgres_template}')
    yield postgres_url(name)
    postgres_admin(f'DROP DATABASE IF EXISTS {name} WITH (FORCE)')


class LiveWorker:
    """The live server's propagation worker: a thread of its process, as `make run` has it,
    carrying changes to the run's real workspace server, where they take milliseconds. A
    test that must see a change Pending pauses it first and resumes it after; pause()
    returns once the job in hand is done, and no other is taken until resume()."""

    def __init__(self, config):
        self.servers = propagation.start_servers()
        self.lease, self.poll = propagation.settings(config)
        self.stop, self.thread = threading.Event(), None
        self.resume()

    def resume(self):
        if self.thread is None:
            self.stop = threading.Event()
            self.thread = threading.Thread(
                target=propagation.run, args=(self.servers, self.lease, self.poll, self.stop),
                name='propagation', daemon=True)
            self.thread.start()

    def pause(self):
        if self.thread is not None:
            self.stop.set()
            self.thread.join(10)  # it ends once the job in hand is done
            assert not self.thread.is_alive(), 'the propagation worker did not stop'
            self.thread = None

    def finish(self):
        """Carry out every due job now, in this thread (the worker paused meanwhile), for a
        test that needs them done before it looks."""
        running = self.thread is not None
        self.pause()
        run_jobs(self.servers)
        if running:
            self.resume()


@pytest.fixture(scope='module')
def _live(live_database_url):
    """Penstock served over real HTTP on loopback, with its own fresh database, and its
    propagation worker: (base URL, LiveWorker).

    database.db is one global proxy, so this app must be the only one while the module's
    browser tests run; module scope keeps them from interleaving with other app fixtures.
    """
    app = create_app({
        'DATABASE_URL': live_database_url,
        'SECRET_KEY': 'browser-tests',
        'SESSION_COOKIE_SECURE': False,  # plain http on 127.0.0.1
        'GRAVATAR_ENABLED': False,  # signups here must not reach the internet
        'DATABASE_PASSWORD_KEYS': TEST_PASSWORD_KEY,
        'PROPAGATION_POLL': 0.2,
    })
    opened = database.db.obj
    database.migrate(opened)
    database.db.close()
    worker = LiveWorker(app.config)  # as make run has, once tables exist
    server = make_server('127.0.0.1', 0, buffered(app), threaded=True)
    thread = threading.Thread(target=server.serve_forever, name='penstock-live-server')
    thread.start()
    try:
        yield f'http://127.0.0.1:{server.server_port}', worker
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
        worker.pause()  # it must not find its database gone
        opened.close_all()  # the pool's connections, before the database is dropped


@pytest.fixture(scope='module')
def live_server(_live):
    return _live[0]


@pytest.fixture
def live_worker(_live):
    return _live[1]


@pytest.fixture(autouse=True)
def _live_jobs_finished(request):
    """After a test on the live server, its jobs are done and its worker runs again (a test
    may have paused it), before the workspace server is cleared (tests/conftest.py): a
    worker dropping a database meanwhile would race the clearing."""
    live = 'live_server' in request.fixturenames
    worker = request.getfixturevalue('live_worker') if live else None
    yield
    if worker is not None:
        worker.finish()
        worker.resume()


@pytest.fixture
def new_page(browser, live_server):
    """Open a page in a fresh browser context (own cookies); every context is closed after.
    Other context options (timezone_id, locale) pass through."""
    contexts = []

    def open_page(javascript=True, color_scheme='light', **options):
        context = browser.new_context(base_url=live_server, java_script_enabled=javascript,
                                      color_scheme=color_scheme, **options)
        context.set_default_timeout(10_000)  # fail fast rather than after Playwright's 30 s
        contexts.append(context)
        return context.new_page()

    yield open_page
    for context in contexts:
        context.close()


@pytest.fixture(params=[True, False], ids=['js', 'no-js'])
def javascript(request):
    """Every flow runs with JavaScript on, then again with it off: both must work."""
    return request.param


@pytest.fixture
def page(new_page, javascript):
    return new_page(javascript=javascript)


@pytest.fixture(scope='session')
def axe_source():
    return AXE_SOURCE.read_text(encoding='utf-8')


SERIOUS_AXE_RESULTS = '''async () => {
  const results = await axe.run(document, {resultTypes: ['violations']});
  return results.violations
    .filter(v => v.impact === 'serious' || v.impact === 'critical')
    .map(v => ({id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.map(n => n.target.join(' ') + ': ' + n.failureSummary)}));
}'''


class AxeAudit:
    """axe-core run on a page at each step of a test; assert_clean() then lists what it found."""

    def __init__(self, page, source):
        self.page, self.source, self.found = page, source, {}

    def __call__(self, where):
        self.page.wait_for_load_state()
        # Wait for htmx to finish settling what it swapped in, so axe sees the final page.
        expect(self.page.locator('.htmx-added, .htmx-settling, .htmx-request')).to_have_count(0)
        if not self.page.evaluate("typeof window.axe === 'object'"):
            self.page.evaluate(self.source)
        violations = self.page.evaluate(SERIOUS_AXE_RESULTS)
        if violations:
            self.found[where] = violations

    def assert_clean(self, label):
        report = '\n'.join(
            f'{where}: {v["impact"]} {v["id"]} ({v["help"]})\n    ' + '\n    '.join(v['nodes'])
            for where, violations in self.found.items() for v in violations)
        assert not self.found, f'{label}, serious or critical axe violations:\n{report}'


@pytest.fixture
def axe(axe_source):
    """Make an AxeAudit for a page: axe(page) gives the callable to run at each step."""
    return lambda page: AxeAudit(page, axe_source)


@pytest.fixture
def person():
    """Someone new to Penstock for this test: a handle no other test has used."""
    return Person()
