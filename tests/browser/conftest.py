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


@pytest.fixture(scope='module')
def live_server(live_database_url):
    """Penstock served over real HTTP on loopback, with its own fresh database.

    database.db is one global proxy, so this app must be the only one while the module's
    browser tests run; module scope keeps them from interleaving with other app fixtures.
    """
    app = create_app({
        'DATABASE_URL': live_database_url,
        'SECRET_KEY': 'browser-tests',
        'SESSION_COOKIE_SECURE': False,  # plain http on 127.0.0.1
        'GRAVATAR_ENABLED': False,  # signups here must not reach the internet
        'DATABASE_PASSWORD_KEYS': TEST_PASSWORD_KEY,
        'PROPAGATION_DELAY': 1.0,  # long enough to see "pending", short enough to wait for
        'PROPAGATION_POLL': 0.2,
    })
    opened = database.db.obj
    database.migrate(opened)
    database.db.close()
    stop_worker = propagation.start_thread(app.config)  # as make run has, once tables exist
    server = make_server('127.0.0.1', 0, buffered(app), threaded=True)
    thread = threading.Thread(target=server.serve_forever, name='penstock-live-server')
    thread.start()
    try:
        yield f'http://127.0.0.1:{server.server_port}'
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
        stop_worker.set()
        for worker in [t for t in threading.enumerate() if t.name == 'propagation']:
            worker.join(10)  # it ends at its next poll, and must not find its database gone
        opened.close_all()  # the pool's connections, before the database is dropped


@pytest.fixture
def new_page(browser, live_server):
    """Open a page in a fresh browser context (own cookies); every context is closed after."""
    contexts = []

    def open_page(javascript=True, color_scheme='light'):
        context = browser.new_context(base_url=live_server, java_script_enabled=javascript,
                                      color_scheme=color_scheme)
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
