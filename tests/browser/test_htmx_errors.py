"""Error answers to htmx requests in a real Chromium: htmx swaps nothing for them, so the page
says what went wrong in its flash region, and nothing was saved."""
import io

import pytest
from PIL import Image
from playwright.sync_api import expect

from tests.browser.helpers import call, panel_heading, settings_link, settled

FORM_EXPIRED = ('This form has expired or did not come from Penstock, so nothing was changed. '
                'Reload the page and try again.')


def open_notifications(page, person):
    person.sign_up(page)
    settings_link(page, 'Notifications').click()
    expect(panel_heading(page, 'Notifications')).to_be_visible()
    settled(page)


def switch(page, name):
    return page.get_by_role('switch', name=name, exact=True)


def spoil_csrf_token(form):
    """What a stale page sends: a csrf_token field the server will not accept."""
    form.locator('input[name="csrf_token"]').evaluate("input => { input.value = 'stale'; }")


def test_an_expired_form_says_so_in_the_flash_and_saves_nothing(new_page, person):
    page = new_page(javascript=True)
    open_notifications(page, person)
    flash = page.get_by_role('status')
    switch(page, 'Product Updates').set_checked(False)
    expect(flash).to_have_text('Notification preferences saved.')

    spoil_csrf_token(page.locator('#notifications-form'))
    switch(page, 'Community Updates').set_checked(True)
    expect(flash).to_have_text(FORM_EXPIRED)  # in place of "saved", not beside it
    expect(flash.locator('p')).to_have_count(1)
    expect(flash.locator('p')).to_have_class('flash-error')  # shown as an error, not a success

    page.reload()
    expect(flash).to_be_hidden()
    expect(switch(page, 'Community Updates')).not_to_be_checked()
    expect(switch(page, 'Product Updates')).not_to_be_checked()  # the first change stays


def test_the_cli_login_page_says_an_error_in_its_flash_region(new_page, person, live_server):
    page = new_page(javascript=True)
    person.sign_up(page)
    _, started = call(f'{live_server}/api/v0/login/token', method='POST')
    page.goto(started['url'])  # the CLI login's page: not a settings page
    settled(page)
    verify = page.get_by_role('button', name='Verify')
    spoil_csrf_token(page.locator('form', has=verify))

    verify.click()
    expect(page.get_by_role('status')).to_have_text(FORM_EXPIRED)
    page.reload()
    expect(page.get_by_role('button', name='Verify')).to_be_visible()  # still waiting


def abort(route):
    route.abort()


def plain_bad_gateway(route):
    route.fulfill(status=502, content_type='text/plain', body='Bad gateway')


@pytest.mark.parametrize('answer, message', [
    (abort, 'Penstock could not be reached. Check your connection and try again.'),
    (plain_bad_gateway, 'Something went wrong (status 502). Reload the page and try again.'),
], ids=['no-answer', 'answer-without-message'])
def test_a_change_that_fails_on_its_way_says_so_in_the_flash(new_page, person, answer, message):
    page = new_page(javascript=True)
    open_notifications(page, person)
    page.route('**/settings/notifications',
               lambda route: answer(route) if route.request.method == 'POST'
               else route.continue_())

    switch(page, 'Community Updates').set_checked(True)
    expect(page.get_by_role('status')).to_have_text(message)

    page.unroute('**/settings/notifications')
    page.reload()
    expect(switch(page, 'Community Updates')).not_to_be_checked()


def test_the_avatar_form_says_its_failure_beside_the_file_not_in_the_flash(new_page, person):
    page = new_page(javascript=True)
    person.sign_up(page)
    settled(page)
    png = io.BytesIO()
    Image.new('RGB', (200, 200), (255, 0, 0)).save(png, 'PNG')
    change_avatar = page.get_by_label('Change avatar')
    spoil_csrf_token(page.locator('#avatar-form'))

    change_avatar.set_input_files(
        {'name': 'red.png', 'mimeType': 'image/png', 'buffer': png.getvalue()})
    expect(page.get_by_role('alert')).to_have_text(FORM_EXPIRED)  # the answer's own words
    expect(change_avatar).to_have_attribute('aria-invalid', 'true')
    expect(page.locator('#flash')).to_be_empty()
