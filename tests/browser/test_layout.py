"""Every page fits the screen, on a 360 px phone, a 900 px tablet and a 1280 px desktop, with
JavaScript on and off, for a person whose account is full (long display name, a workspace,
tokens, audit records of every kind, sessions): nothing reaches past the right edge unless a box
that scrolls sideways holds it, and every menu opens inside the viewport without widening the
page (SPEC §13)."""
import io
import re

import pytest
from PIL import Image, ImageChops
from playwright.sync_api import expect

import credentials
import database
from tests.browser.helpers import Person, settled
from tests.browser.showcase import DESKTOP, Showcase, account, make_showcase
from tests.browser.showcase import Page as ShownPage

PHONE_360 = {'viewport': {'width': 360, 'height': 740}, 'is_mobile': True, 'has_touch': True,
             'device_scale_factor': 2}
# A tablet: just wider than where tables become stacked rows (56rem, 896 px), the least room a
# table gets.
TABLET = {'viewport': {'width': 900, 'height': 1000}, 'has_touch': True}
WIDTHS = {'phone': PHONE_360, 'tablet': TABLET, 'desktop': DESKTOP}
# Just wider than the top bar's menus open under their own buttons: the least room they get.
MENU_WIDTHS = {**WIDTHS, 'narrow-desktop': {'viewport': {'width': 840, 'height': 800}}}
# The fade at each edge of the phone's sideways settings strip, in CSS px (app.css).
STRIP_FADE = 16
PAGES = ['home', 'profile', 'notifications', 'tokens', 'advanced', 'audit-log', 'cli-login',
         'unsubscribe', 'login', 'signup']

# Visible elements whose box ends past the right edge `width`, unless an ancestor scrolls
# sideways (overflow-x auto or scroll) and so holds them in its own box. Only the outermost of
# each overflowing subtree is listed, described by tag, id, classes, text and right edge.
OFFENDERS = '''width => {
  const scrolls = el => ['auto', 'scroll'].includes(getComputedStyle(el).overflowX);
  const describe = el => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '')
    + [...el.classList].map(c => '.' + c).join('');
  const overflowing = new Set(), found = [];
  const walk = (parent, held) => {
    for (const el of parent.children) {
      const style = getComputedStyle(el);
      if (style.display === 'none') continue;
      const box = el.getBoundingClientRect();
      if (!held && style.visibility !== 'hidden' && box.width > 0 && box.height > 0
          && box.right > width + 0.5) {
        if (!overflowing.has(parent)) {
          const text = (el.innerText || el.textContent || '').replace(/\\s+/g, ' ').trim();
          found.push(`${describe(el)} "${text.slice(0, 50)}" from x=${Math.round(box.left)} `
                     + `to x=${Math.round(box.right)}`);
        }
        overflowing.add(el);
      }
      walk(el, held || scrolls(el));
    }
  };
  walk(document.body, false);
  return found;
}'''


@pytest.fixture(scope='module')
def showcase(browser, _live):
    """One full account for the whole module: making it takes several logins."""
    base_url, worker = _live
    return make_showcase(browser, base_url, worker)


@pytest.fixture(scope='module')
def short_named(browser, _live):
    """Someone named "Ana", with two tokens, and their Tokens page: a short name leaves the
    Switch identity button far to the right, where its menu once ran off the screen."""
    context = browser.new_context(base_url=_live[0])
    person = Person()
    person.sign_up(context.new_page())
    with database.db.connection_context():
        user = account(person)
        user.set_display_name('Ana')
        for _ in range(2):
            credentials.Token.issue(user)
    state = context.storage_state()
    context.close()
    return Showcase(person, state, [ShownPage('tokens', f'/user/{person.handle}/settings/tokens')])


@pytest.fixture
def open_at(browser, live_server, showcase, short_named):
    """open_at(name, width, javascript): a page of the showcase, in a browser of that width
    (short_name=True: logged in as Ana instead)."""
    contexts = []

    def open_page(name, width, javascript, short_name=False):
        who = short_named if short_name else showcase
        shown = next(page for page in who.pages if page.name == name)
        context = browser.new_context(
            base_url=live_server, java_script_enabled=javascript, **MENU_WIDTHS[width],
            storage_state=who.storage_state if shown.logged_in else None)
        context.set_default_timeout(10_000)
        contexts.append(context)
        page = context.new_page()
        page.goto(shown.path)
        expect(page.locator('main h1, main h2').first).to_be_visible()
        if javascript:
            settled(page)
        return page

    yield open_page
    for context in contexts:
        context.close()


def viewport_width(page):
    return page.viewport_size['width']


def assert_fits(page, where):
    width = viewport_width(page)
    scroll_width = page.evaluate('document.documentElement.scrollWidth')
    offenders = page.evaluate(OFFENDERS, width)
    assert scroll_width <= width and not offenders, (
        f'{where}: the page is {scroll_width} px wide on a {width} px screen; past the right '
        'edge:\n  ' + '\n  '.join(offenders))


@pytest.mark.parametrize('javascript', [True, False], ids=['js', 'no-js'])
@pytest.mark.parametrize('width', WIDTHS)
@pytest.mark.parametrize('name', PAGES)
def test_the_page_fits_the_screen(open_at, axe, name, width, javascript):
    page = open_at(name, width, javascript)
    assert_fits(page, f'{name} at {width} width')
    menu = page.get_by_role('navigation', name='Settings')
    if menu.count():  # the five links, the current one on screen; on a phone, in one line
        expect(menu.get_by_role('link')).to_have_text(
            ['Profile', 'Notifications', 'Tokens', 'Advanced', 'Audit Log'])
        current = menu.locator('a[aria-current="page"]').bounding_box()
        right = current['x'] + current['width']
        assert -1 < current['x'] and right < viewport_width(page) + 1, (
            f'{name}: the current settings item is off screen, at x={current["x"]:.0f}')
        if width == 'phone':
            assert menu.bounding_box()['height'] < 3 * current['height'], 'not one line'
    if javascript:  # axe-core is a script: it runs where scripts do
        audit = axe(page)
        audit(name)
        audit.assert_clean(f'{name} at {width} width')


def assert_opens_inside(page, summary, panel, where):
    """Open the menu whose summary is `summary`: its panel shows inside the viewport's width,
    and the page is no wider than before."""
    before = page.evaluate('document.documentElement.scrollWidth')
    summary.click()
    expect(panel).to_be_visible()
    box = panel.bounding_box()
    width = viewport_width(page)
    assert box['x'] >= 0 and box['x'] + box['width'] <= width and box['y'] >= 0, (
        f'{where}: the menu spans x={box["x"]:.0f} to {box["x"] + box["width"]:.0f} '
        f'on a {width} px screen')
    assert page.evaluate('document.documentElement.scrollWidth') == before, (
        f'{where}: opening the menu widened the page')


@pytest.mark.parametrize('javascript', [True, False], ids=['js', 'no-js'])
@pytest.mark.parametrize('width', MENU_WIDTHS)
@pytest.mark.parametrize('short_name', [False, True], ids=['long-name', 'short-name'])
def test_every_menu_opens_inside_the_viewport(open_at, short_name, width, javascript):
    page = open_at('tokens', width, javascript, short_name)
    identity = page.locator('details.identity')
    assert_opens_inside(page, page.get_by_role('button', name='Switch identity'),
                        identity.locator('> .menu-panel'), 'Switch identity')
    submenu = identity.locator('details.submenu')
    assert_opens_inside(page, submenu.locator('> summary'), submenu.locator('.menu-list'),
                        'Switch identity, its account')
    assert_opens_inside(page, submenu.locator('> summary'), identity.locator('> .menu-panel'),
                        'Switch identity, the account closed again')
    page.get_by_role('button', name='Switch identity').click()  # closed again
    account = page.get_by_role('button', name='Account menu')
    assert_opens_inside(page, account, page.locator('details.account > .menu-panel'),
                        'Account menu')
    account.click()
    options = page.get_by_role('button', name='Token options')
    expect(options).to_have_count(2)
    for index in range(2):
        menu = page.locator('details:has(> summary[aria-label="Token options"])').nth(index)
        assert_opens_inside(page, options.nth(index), menu.locator('> .menu-panel'),
                            f'Token options of token {index + 1}')
        options.nth(index).click()
        expect(menu.locator('> .menu-panel')).to_be_hidden()
    assert_fits(page, f'Tokens at {width} width after every menu opened and closed')


@pytest.mark.parametrize('javascript', [True, False], ids=['js', 'no-js'])
def test_on_a_phone_the_settings_menu_shows_the_page_it_leads_to(open_at, javascript):
    page = open_at('profile', 'phone', javascript)
    menu = page.get_by_role('navigation', name='Settings')
    for name in ('Advanced', 'Audit Log', 'Profile'):
        menu.get_by_role('link', name=name).click()
        current = menu.locator('a[aria-current="page"]')
        expect(current).to_have_text(name)
        if javascript:
            settled(page)
        box = current.bounding_box()
        assert -1 < box['x'] and box['x'] + box['width'] < viewport_width(page) + 1, (
            f'{name}: the current settings item is off screen, at x={box["x"]:.0f}')


def ink(image, background, box):
    """How strongly anything is drawn in `box` (left, top, right, bottom) of `image`: the
    largest difference of any channel of any pixel from the `background` colour, 0 to 255."""
    region = image.crop(box)
    plain = Image.new('RGB', region.size, background)
    return max(high for _, high in ImageChops.difference(region, plain).getextrema())


# Scroll the strip holding `link` so that `edge` (an x) cuts its name a third of the way in.
CUT_AT = '''(link, edge) => {
  const text = document.createRange();
  text.selectNodeContents(link);
  const box = text.getBoundingClientRect();
  link.closest('nav').scrollLeft += box.left + box.width / 3 - edge;
}'''


@pytest.mark.parametrize('javascript', [True, False], ids=['js', 'no-js'])
def test_on_a_phone_settings_items_cut_off_by_the_strip_fade_out_there(open_at, javascript):
    page = open_at('profile', 'phone', javascript)
    width = viewport_width(page)
    strip = page.get_by_role('navigation', name='Settings')
    links = strip.get_by_role('link')
    # Scrolled to either end, the end item lies whole inside the fade.
    strip.evaluate('strip => { strip.scrollLeft = 0; }')
    assert links.first.bounding_box()['x'] >= STRIP_FADE - .5
    strip.evaluate('strip => { strip.scrollLeft = strip.scrollWidth; }')
    last = links.last.bounding_box()
    assert last['x'] + last['width'] <= width - STRIP_FADE + .5

    background = page.evaluate('getComputedStyle(document.body).backgroundColor')
    background = tuple(int(n) for n in re.findall(r'\d+', background)[:3])
    for name, edge in (('Profile', 0), ('Audit Log', width)):
        link = strip.get_by_role('link', name=name)
        link.evaluate(CUT_AT, edge)
        box = link.bounding_box()
        band = {'x': 0, 'y': box['y'] + box['height'] / 4, 'width': width,
                'height': box['height'] / 2}  # the letters, not the current item's underline
        image = Image.open(io.BytesIO(page.screenshot(clip=band, scale='css'))).convert('RGB')
        cut = ink(image, background, (0, 0, 6, image.height) if edge == 0 else
                  (width - 6, 0, width, image.height))
        whole = ink(image, background, (STRIP_FADE, 0, width - STRIP_FADE, image.height))
        assert whole > 150, 'no letters found'
        assert cut < whole / 2, f'{name}: cut off at the edge, yet drawn at full strength'


@pytest.mark.parametrize('javascript', [True, False], ids=['js', 'no-js'])
@pytest.mark.parametrize('width', ['desktop', 'tablet'])
def test_the_sessions_table_fits_its_card_with_headers_dates_and_clocks_on_one_line(
        open_at, width, javascript):
    """Wider than a phone the Sessions table is a table: it fits its card (no sideways
    scrolling; the device's name wraps instead), and no header, date or clock wraps: each time
    is its date over its clock."""
    page = open_at('advanced', width, javascript)
    table = page.get_by_role('region', name='Sessions').get_by_role('table')
    cells = table.locator('thead th:not(:has(> .visually-hidden)), tbody time > span')
    expect(cells.first).to_be_visible()
    lines = cells.evaluate_all('''cells => cells.map(cell => {
        const text = document.createRange();
        text.selectNodeContents(cell);
        const tops = [...text.getClientRects()].map(line => Math.round(line.top));
        return [cell.textContent.trim(), new Set(tops).size];
    })''')
    assert len(lines) >= 4 + 2 * 2 * 3  # four headers; two times, each in two parts, a session
    assert [text for text, count in lines if count > 1] == []
    assert table.locator('tbody time').evaluate_all(
        'times => times.every(time => time.lastElementChild.getBoundingClientRect().top'
        ' >= time.firstElementChild.getBoundingClientRect().bottom)'), 'date over clock'
    box = page.get_by_role('region', name='Sessions table')
    assert box.evaluate('box => box.scrollWidth <= box.clientWidth'), (
        f'the table scrolls sideways: {box.evaluate("box => box.scrollWidth")} px in '
        f'{box.evaluate("box => box.clientWidth")}')
