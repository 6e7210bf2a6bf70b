"""Saving in place moves nothing on the page (SPEC §13): with JavaScript the status is a toast
over the page, said through the live region, that lets clicks through and goes after a while."""
import pytest
from playwright.sync_api import expect

from tests.browser.helpers import panel_heading, settings_link, settled

SIZES = {'desktop': {'width': 1280, 'height': 800}, 'phone': {'width': 360, 'height': 740}}


@pytest.fixture(params=SIZES, ids=list(SIZES))
def sized_page(request, browser, live_server):
    """A page with JavaScript at a desktop's or a phone's size (a phone: touch, mobile)."""
    phone = request.param == 'phone'
    context = browser.new_context(base_url=live_server, viewport=SIZES[request.param],
                                  is_mobile=phone, has_touch=phone)
    context.set_default_timeout(10_000)
    yield context.new_page()
    context.close()


def boxes(locators):
    """Where each element is on the page (not the viewport: clicking may scroll it)."""
    return [locator.evaluate('e => { const r = e.getBoundingClientRect(); '
                             'return [r.x + scrollX, r.y + scrollY, r.width, r.height]; }')
            for locator in locators]


def assert_apart(toast, locator):
    """The toast covers none of `locator`'s box (on the screen: both as the viewport has them)."""
    a, b = toast.bounding_box(), locator.bounding_box()
    assert (a['x'] + a['width'] <= b['x'] or b['x'] + b['width'] <= a['x']
            or a['y'] + a['height'] <= b['y'] or b['y'] + b['height'] <= a['y']), (a, b)


def test_toggling_a_switch_leaves_the_next_one_under_the_pointer(sized_page, person):
    page = sized_page
    person.sign_up(page)
    settings_link(page, 'Notifications').click()
    expect(panel_heading(page, 'Notifications')).to_be_visible()
    settled(page)
    switches = [page.get_by_role('switch', name=name, exact=True)
                for name in ('Community Updates', 'Product Updates', 'Tips & Tricks', 'System')]
    before = boxes(switches)

    switches[0].click()
    status = page.get_by_role('status')
    expect(status).to_have_text('Notification preferences saved.')

    assert boxes(switches) == before
    viewport = page.viewport_size
    toast = status.bounding_box()
    assert 0 <= toast['x'] and toast['x'] + toast['width'] <= viewport['width']
    assert toast['y'] + toast['height'] <= viewport['height']
    for switch in switches:
        assert_apart(status, switch)
    switches[1].click()  # the next switch, where it was: nothing moved it
    expect(switches[1]).not_to_be_checked()
    expect(status).to_have_text('Notification preferences saved.')
    assert boxes(switches) == before

    # The toast lets a click through to what is under it, and goes after 10 s by itself.
    toast = status.bounding_box()
    under = page.evaluate('([x, y]) => document.elementFromPoint(x, y).id',
                          [toast['x'] + toast['width'] / 2, toast['y'] + toast['height'] / 2])
    assert under != 'flash'
    expect(status).to_be_empty(timeout=15_000)
    expect(status).to_be_hidden()
    assert boxes(switches) == before


def test_saving_the_display_name_moves_nothing_on_the_profile(sized_page, person):
    page = sized_page
    person.sign_up(page)
    settled(page)
    field = page.get_by_label('Display Name')
    save = page.get_by_role('button', name='Save')
    heading = panel_heading(page, 'Profile')
    before = boxes([heading, field, save])

    field.fill('Ada Lovelace')
    save.click()

    expect(page.get_by_role('status')).to_have_text('Display name saved.')
    settled(page)
    assert boxes([heading, field, save]) == before
    assert_apart(page.get_by_role('status'), save)
