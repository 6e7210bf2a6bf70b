"""Penstock in a real Chromium: the account flows a person clicks through, with and without JS."""
import re
from urllib.parse import urlencode

import pytest
from playwright.sync_api import expect

from tests.browser.helpers import (
    GENERIC_LOGIN_ERROR,
    call,
    is_same_document,
    mark_document,
    panel_heading,
    settings_link,
    settled,
    url_ending,
)


def open_account_menu(page):
    page.get_by_role('button', name='Account menu').click()
    settings = page.get_by_role('link', name='Settings')
    expect(settings).to_be_visible()
    return settings


def log_out(page):
    open_account_menu(page)
    page.get_by_role('button', name='Log out').click()
    expect(page).to_have_url(url_ending('/login'))


def open_identity_menu(page, person):
    """Open Switch identity, then the user's own account in it; returns its Settings link."""
    switch = page.get_by_role('button', name='Switch identity')
    switch.click()
    menu = page.get_by_role('group').filter(has=switch)
    account = menu.get_by_text(person.handle, exact=True)
    expect(account).to_be_visible()
    account.click()
    return menu.get_by_role('link', name='Settings')


def test_sign_up_log_out_log_in_and_move_between_settings_panels(page, javascript, person):
    person.sign_up(page)
    expect(panel_heading(page, 'Profile')).to_be_visible()
    expect(page.get_by_role('banner')).to_contain_text(person.handle, use_inner_text=True)

    log_out(page)
    expect(page.get_by_role('status')).to_have_text('You are logged out.')
    expect(page.get_by_role('button', name='Account menu')).to_have_count(0)

    person.log_in(page)
    expect(page).to_have_url(url_ending('/'))  # the console home
    page.goto(person.notifications_path)
    open_account_menu(page).click()
    expect(page).to_have_url(url_ending(person.profile_path))
    expect(panel_heading(page, 'Profile')).to_be_visible()
    page.wait_for_load_state()

    mark_document(page)
    settings_link(page, 'Notifications').click()
    expect(page).to_have_url(url_ending(person.notifications_path))
    expect(panel_heading(page, 'Notifications')).to_be_visible()
    expect(page).to_have_title('Notifications · Penstock')
    expect(settings_link(page, 'Notifications')).to_have_attribute('aria-current', 'page')
    expect(settings_link(page, 'Profile')).not_to_have_attribute('aria-current', 'page')
    assert is_same_document(page) is javascript, (
        'with JavaScript only the panel is swapped; without it the whole page loads')
    if javascript:
        expect(panel_heading(page, 'Notifications')).to_be_focused()

    page.go_back()
    expect(page).to_have_url(url_ending(person.profile_path))
    expect(panel_heading(page, 'Profile')).to_be_visible()
    expect(panel_heading(page, 'Notifications')).to_have_count(0)
    expect(settings_link(page, 'Profile')).to_have_attribute('aria-current', 'page')


def test_saved_display_name_shows_in_the_header_at_once(page, javascript, person):
    person.sign_up(page)
    banner = page.get_by_role('banner')
    expect(banner).to_contain_text(person.handle, use_inner_text=True)

    mark_document(page)
    page.get_by_label('Display Name').fill('Ada Lovelace')
    page.get_by_role('button', name='Save').click()

    expect(page.get_by_role('status')).to_have_text('Display name saved.')
    expect(banner).to_contain_text('Ada Lovelace', use_inner_text=True)
    expect(banner).not_to_contain_text(person.handle, use_inner_text=True)
    expect(page.get_by_label('Display Name')).to_have_value('Ada Lovelace')
    expect(page).to_have_url(url_ending(person.profile_path))
    assert is_same_document(page) is javascript, (
        'with JavaScript the form and header are swapped in place; without it, POST/redirect/GET')

    page.reload()
    expect(banner).to_contain_text('Ada Lovelace', use_inner_text=True)
    expect(page.get_by_role('status')).to_be_hidden()


def test_clearing_the_display_name_shows_the_handle_again(page, javascript, person):
    person.sign_up(page)
    banner = page.get_by_role('banner')
    name_field = page.get_by_label('Display Name')
    expect(name_field).to_have_accessible_description(
        re.compile('leave it empty to show your handle'))
    name_field.fill('Ada Lovelace')
    page.get_by_role('button', name='Save').click()
    expect(banner).to_contain_text('Ada Lovelace', use_inner_text=True)
    page.wait_for_load_state()
    settled(page)

    mark_document(page)
    name_field.fill('   ')
    page.get_by_role('button', name='Save').click()

    expect(page.get_by_role('status')).to_have_text(
        'Display name cleared: the console shows your handle.')
    expect(banner).not_to_contain_text('Ada Lovelace', use_inner_text=True)
    expect(banner.locator('.account-name')).to_have_text(person.handle)
    expect(name_field).to_have_value('')
    expect(name_field).not_to_have_attribute('aria-invalid', 'true')
    assert is_same_document(page) is javascript
    open_account_menu(page)
    expect(page.locator('.account .menu-heading strong')).to_have_text(person.handle)


def test_too_long_display_name_is_refused_in_place_and_header_keeps_old_name(
        page, javascript, person):
    person.sign_up(page)
    name_field = page.get_by_label('Display Name')
    name_field.fill('Ada Lovelace')
    page.get_by_role('button', name='Save').click()
    expect(page.get_by_role('status')).to_have_text('Display name saved.')
    page.wait_for_load_state()
    settled(page)
    if javascript:  # the swapped form keeps focus where it was, not lost on <body>
        expect(page.get_by_role('button', name='Save')).to_be_focused()

    mark_document(page)
    too_long = 'x' * 101
    name_field.fill(too_long)
    page.get_by_role('button', name='Save').click()

    error = 'Use at most 100 characters (this is 101).'
    expect(page.get_by_text(error)).to_be_visible()
    expect(name_field).to_have_attribute('aria-invalid', 'true')
    expect(name_field).to_have_accessible_description(re.compile(re.escape(error)))
    expect(name_field).to_have_value(too_long)
    if javascript:  # focus goes to the refused field, so its error is read out
        expect(name_field).to_be_focused()
    expect(page.get_by_role('status')).to_be_hidden()  # the earlier "saved" is gone
    banner = page.get_by_role('banner')
    expect(banner).to_contain_text('Ada Lovelace', use_inner_text=True)
    expect(banner).not_to_contain_text(too_long)
    assert is_same_document(page) is javascript

    page.goto(person.profile_path)  # not reload(): without JS that would POST again
    expect(banner).to_contain_text('Ada Lovelace', use_inner_text=True)
    expect(name_field).to_have_value('Ada Lovelace')


def test_notification_switches_are_saved_and_system_cannot_be_turned_off(
        page, javascript, person):
    person.sign_up(page)
    settings_link(page, 'Notifications').click()
    expect(page).to_have_url(url_ending(person.notifications_path))
    expect(panel_heading(page, 'Notifications')).to_be_visible()
    settled(page)
    community = page.get_by_role('switch', name='Community Updates', exact=True)
    product = page.get_by_role('switch', name='Product Updates', exact=True)
    system = page.get_by_role('switch', name='System', exact=True)
    save = page.get_by_role('button', name='Save')

    expect(community).not_to_be_checked()
    expect(product).to_be_checked()
    expect(system).to_be_checked()
    expect(system).to_be_disabled()
    expect(system).to_have_accessible_description(
        re.compile('System notifications cannot be disabled'))

    def change(switch, on):
        switch.set_checked(on)
        if javascript:
            expect(save).to_have_count(0)  # a change saves itself
        else:
            save.click()
            expect(page).to_have_url(url_ending(person.notifications_path))
        expect(page.get_by_role('status')).to_have_text('Notification preferences saved.')
        page.reload()
        expect(page.get_by_role('status')).to_be_hidden()

    change(community, True)
    expect(community).to_be_checked()
    expect(product).to_be_checked()
    expect(system).to_be_checked()

    change(product, False)
    expect(community).to_be_checked()
    expect(product).not_to_be_checked()
    expect(system).to_be_checked()
    expect(system).to_be_disabled()


def test_wrong_password_gets_one_error_that_does_not_say_whether_the_account_exists(
        page, person):
    person.sign_up(page)
    log_out(page)

    for login in (person.handle, person.email, 'nobody-' + person.handle):
        person.log_in(page, login=login, password='not the password')
        expect(page).to_have_url(url_ending('/login'))
        expect(page.get_by_role('alert')).to_have_count(1)
        expect(page.get_by_role('alert')).to_have_text(GENERIC_LOGIN_ERROR)
        expect(page.get_by_label('Email', exact=True)).to_have_value(login)
        expect(page.get_by_label('Password', exact=True)).to_have_value('')
        expect(page.get_by_role('button', name='Account menu')).to_have_count(0)

    person.log_in(page, login=person.email)
    expect(page).to_have_url(url_ending('/'))


def test_a_next_that_points_elsewhere_leads_home_on_this_site(page, live_server, javascript,
                                                              person):
    """Chromium itself reads each target (it drops the tab, takes the backslash for a
    slash): logging in, Confirm your password and its Cancel link all stay on this site."""
    person.sign_up(page)
    home = live_server + '/'
    for target in ['/\t/evil.example', '/\\evil.example', ' https://evil.example/']:
        query = urlencode({'next': target})
        page.goto('/reauth?' + query)
        page.get_by_role('link', name='Cancel').click()
        expect(page).to_have_url(home)
        page.goto('/reauth?' + query)
        page.get_by_label('Password', exact=True).fill(person.password)
        page.get_by_role('button', name='Continue').click()
        expect(page).to_have_url(home)
        log_out(page)
        page.goto('/login?' + query)
        page.get_by_label('Email', exact=True).fill(person.handle)
        page.get_by_label('Password', exact=True).fill(person.password)
        page.get_by_role('button', name='Log in').click()
        expect(page).to_have_url(home)
        page.goto('/login?' + query)  # already logged in: sent on at once
        expect(page).to_have_url(home)


def test_settings_link_after_logging_out_in_another_tab_leads_to_login_and_back(
        page, javascript, person):
    person.sign_up(page)
    other_tab = page.context.new_page()
    other_tab.goto(person.profile_path)
    log_out(other_tab)
    other_tab.close()

    settings_link(page, 'Notifications').click()
    expect(page).to_have_url(re.compile(r'/login\?next='))
    expect(page.get_by_role('heading', level=1, name='Log in')).to_be_visible()
    page.get_by_label('Email', exact=True).fill(person.email)
    page.get_by_label('Password', exact=True).fill(person.password)
    page.get_by_role('button', name='Log in').click()

    # With or without JavaScript, the link leads where it pointed once logged in.
    expect(page).to_have_url(url_ending(person.notifications_path))
    expect(page.get_by_role('button', name='Account menu')).to_be_visible()


def test_switch_identity_lists_own_account_with_a_settings_link(page, person):
    person.sign_up(page)
    page.goto(person.notifications_path)

    settings = open_identity_menu(page, person)
    expect(settings).to_be_visible()
    settings.click()

    expect(page).to_have_url(url_ending(person.profile_path))
    expect(panel_heading(page, 'Profile')).to_be_visible()


@pytest.mark.parametrize('key', ['Enter', 'Space'])
def test_account_menu_opens_from_the_keyboard_and_escape_closes_it(new_page, person, key):
    page = new_page(javascript=True)
    person.sign_up(page)
    menu_button = page.get_by_role('button', name='Account menu')
    settings = page.get_by_role('link', name='Settings')
    expect(settings).to_be_hidden()

    menu_button.focus()
    page.keyboard.press(key)
    expect(settings).to_be_visible()
    page.keyboard.press('Escape')
    expect(settings).to_be_hidden()
    expect(menu_button).to_be_focused()

    page.keyboard.press(key)
    expect(settings).to_be_visible()
    page.keyboard.press('Tab')
    expect(settings).to_be_focused()
    page.keyboard.press('Escape')
    expect(settings).to_be_hidden()
    expect(menu_button).to_be_focused()


@pytest.mark.parametrize('color_scheme', ['light', 'dark'])
def test_pages_have_no_serious_accessibility_violations(new_page, axe, person,
                                                        color_scheme):
    page = new_page(javascript=True, color_scheme=color_scheme)
    audit = axe(page)

    page.goto('/login')
    audit('/login')
    person.log_in(page, password='not the password')
    expect(page.get_by_role('alert')).to_be_visible()
    audit('/login with an error')
    page.goto('/signup')
    audit('/signup')
    person.sign_up(page)
    audit('profile')

    open_account_menu(page)
    audit('profile, account menu open')
    page.keyboard.press('Escape')
    open_identity_menu(page, person)
    audit('profile, switch identity menu open')
    page.keyboard.press('Escape')

    page.get_by_label('Display Name').fill('x' * 101)
    page.get_by_role('button', name='Save').click()
    expect(page.get_by_label('Display Name')).to_have_attribute('aria-invalid', 'true')
    audit('profile, display name error')

    settings_link(page, 'Notifications').click()
    expect(panel_heading(page, 'Notifications')).to_be_visible()
    audit('notifications')

    audit.assert_clean(f'{color_scheme} scheme')


def test_signing_up_from_a_cli_login_link_comes_back_to_verify_it(
        page, javascript, person, live_server):
    """Logged out, a CLI login link leads to log in, saying why; a new user follows Sign up
    (which says the same) and, signed up, is on the verify page and can verify."""
    status, started = call(f'{live_server}/api/v0/login/token', method='POST')
    assert status == 201
    page.goto(started['url'])
    expect(page).to_have_url(re.compile(r'/login\?next='))
    expect(page.get_by_text('Log in to verify the CLI login request.')).to_be_visible()
    page.get_by_role('link', name='Sign up').click()

    expect(page).to_have_url(re.compile(r'/signup\?next='))
    expect(page.get_by_text('Sign up to verify the CLI login request.')).to_be_visible()
    page.get_by_label('Email', exact=True).fill(person.email)
    page.get_by_label('Handle', exact=True).fill(person.handle)
    page.get_by_label('Password', exact=True).fill(person.password)
    page.get_by_role('button', name='Sign up').click()

    expect(page.get_by_role('heading', level=1, name='Verify login request')).to_be_visible()
    expect(page).to_have_url(started['url'])
    expect(page.locator('#login-request')).to_contain_text(person.handle)
    settled(page)
    page.get_by_role('button', name='Verify').click()
    code = page.get_by_label('Verification code')
    expect(code).to_have_value(re.compile(r'^[0-9]{6}$'))
    status, body = call(f'{live_server}/api/v0/login/token/{started["id"]}'
                        f'?code={code.input_value()}')
    assert status == 200 and body['token'].startswith('pstt_')
