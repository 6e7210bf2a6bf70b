"""`make screenshots`: PNGs of every page a person sees, light and dark, desktop (1280×800) and
phone (390×844), JavaScript on, full page, into screenshots/ (not committed) to look at.

Self-contained, as the browser tests are: a throwaway database and workspace server, the app
served on a free loopback port with its propagation worker, and the realistic account of
tests/browser/showcase.py (long display name, a workspace, tokens, audit records of every kind,
sessions). Besides the pages it shows the menus open, a token just created, the Reset
authentication and Delete Personal Account confirmations, and the avatar's crop step.

Run from the project's root as a module (`python -m tools.screenshots`), so that the app and
the tests' helpers import as they do under pytest. `--readme` also writes the README's three
pictures into docs/screenshots/ (committed): the first screen of a few of these, scaled down,
as WebP under README_LIMIT bytes each.
"""
import contextlib
import logging
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path

from cryptography.fernet import Fernet
from PIL import Image
from playwright.sync_api import expect, sync_playwright
from werkzeug.serving import make_server

import database
import embedded
from app import create_app
from tests.browser.conftest import CHROMIUM_ARGS, LiveWorker, buffered
from tests.browser.helpers import settled
from tests.browser.showcase import DESKTOP, PHONE, make_showcase
from tests.images import encoded, noise

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / 'screenshots'
SIZES = {'desktop': DESKTOP, 'phone': PHONE}
README = ROOT / 'docs' / 'screenshots'
README_LIMIT = 80_000
# README picture: (screenshot, the width it is scaled to, in px).
README_PICTURES = {'phone-profile.webp': ('phone-light-profile', 390),
                   'desktop-audit-log.webp': ('desktop-light-audit-log', 960),
                   'dark-tokens.webp': ('desktop-dark-tokens', 960)}


@contextlib.contextmanager
def live_app(folder):
    """The app on http://127.0.0.1:<free port> with a fresh database in `folder`, its own
    throwaway workspace server and propagation worker; yields (base URL, worker)."""
    with embedded.EmbeddedPostgres(Path(folder) / 'workspace-postgres', durable=False) as pg:
        os.environ['WORKSPACE_DATABASE_URL'] = pg.url
        app = create_app({
            'DATABASE_URL': f'sqlite:///{folder}/penstock.db', 'SECRET_KEY': 'screenshots',
            'SESSION_COOKIE_SECURE': False, 'GRAVATAR_ENABLED': False,
            'DATABASE_PASSWORD_KEYS': Fernet.generate_key().decode(), 'PROPAGATION_POLL': 0.2,
        })
        database.migrate(database.db.obj)
        database.db.close()
        worker = LiveWorker(app.config)
        server = make_server('127.0.0.1', 0, buffered(app), threaded=True)
        thread = threading.Thread(target=server.serve_forever, name='screenshots-server')
        thread.start()
        try:
            yield f'http://127.0.0.1:{server.server_port}', worker
        finally:
            server.shutdown()
            server.server_close()
            thread.join()
            worker.pause()
            database.db.obj.close_all()


def shoot(page, name):
    settled(page)
    page.screenshot(path=OUT / f'{name}.png', full_page=True)


def extras(page, showcase, name):
    """The states pages have besides their first look: the menus open, a new token, the
    Danger zone's confirmations, the crop step."""
    settings = f'/user/{showcase.person.handle}/settings'
    page.goto(f'{settings}/tokens')
    page.get_by_role('button', name='Switch identity').click()
    page.locator('details.identity details.submenu > summary').click()
    shoot(page, f'{name}-menu-switch-identity')
    page.get_by_role('button', name='Account menu').click()
    shoot(page, f'{name}-menu-account')
    page.get_by_role('button', name='Token options').last.click()
    shoot(page, f'{name}-menu-token-options')
    page.keyboard.press('Escape')
    page.get_by_role('button', name='Token options').last.click()  # the inactive one stays
    page.locator('details.menu[open]').get_by_role('link', name='Delete').click()  # make room
    settled(page)
    page.get_by_role('button', name='Delete', exact=True).click()
    settled(page)
    page.get_by_role('button', name='New Token').click()
    expect(page.get_by_text('Make a secure note of the token')).to_be_visible()
    shoot(page, f'{name}-token-created')
    page.goto(f'{settings}/advanced')
    for button in ('Reset authentication', 'Delete Personal Account'):
        page.get_by_role('button', name=button).first.click()
        settled(page)
        shoot(page, f'{name}-advanced-{button.split()[0].lower()}-confirm')
        page.goto(f'{settings}/advanced')
    page.goto(f'{settings}/profile')
    settled(page)
    page.locator('input[type=file]').set_input_files(
        {'name': 'photo.png', 'mimeType': 'image/png', 'buffer': encoded(noise((900, 600)), 'PNG')})
    expect(page.get_by_role('heading', name='Edit your avatar')).to_be_visible()
    shoot(page, f'{name}-avatar-crop')


def readme_pictures():
    """The README's pictures: each screenshot's first screen, scaled, as WebP."""
    for name, (shot, width) in README_PICTURES.items():
        size = SIZES[shot.split('-')[0]]
        scale = size.get('device_scale_factor', 1)
        with Image.open(OUT / f'{shot}.png') as image:
            screen = image.crop((0, 0, image.width, size['viewport']['height'] * scale))
            height = round(screen.height * width / screen.width)
            screen.convert('RGB').resize((width, height), Image.LANCZOS).save(
                README / name, 'WEBP', quality=80, method=6)
        written = (README / name).stat().st_size
        if written > README_LIMIT:
            raise SystemExit(f'{README / name} is {written} bytes, over {README_LIMIT}')
        print(f'{README / name}: {written} bytes')


def main():
    logging.getLogger('werkzeug').setLevel(logging.WARNING)  # no line per request
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir()
    executable = os.environ.get('PENSTOCK_CHROMIUM', '/usr/bin/chromium')
    with tempfile.TemporaryDirectory(prefix='penstock-screenshots-') as folder, \
            live_app(folder) as (base_url, worker), sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True,
                                             args=CHROMIUM_ARGS)
        showcase = make_showcase(browser, base_url, worker)
        for scheme in ('light', 'dark'):
            for size, options in SIZES.items():
                for logged_in in (True, False):
                    context = browser.new_context(
                        base_url=base_url, color_scheme=scheme, **options,
                        storage_state=showcase.storage_state if logged_in else None)
                    context.set_default_timeout(10_000)
                    page = context.new_page()
                    for shown in showcase.pages:
                        if shown.logged_in == logged_in:
                            page.goto(shown.path)
                            shoot(page, f'{size}-{scheme}-{shown.name}')
                    if logged_in:
                        extras(page, showcase, f'{size}-{scheme}')
                    context.close()
        browser.close()
    print(f'{len(list(OUT.glob("*.png")))} screenshots in {OUT}/')
    if '--readme' in sys.argv[1:]:
        readme_pictures()


if __name__ == '__main__':
    main()
