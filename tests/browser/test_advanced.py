"""Settings → Advanced in a real Chromium, with and without JS: change the handle through its
preview, delete the account by typing the handle, revoke another browser's session."""
import re

import pytest
from playwright.sync_api import expect

import database
import models
from tests.browser.helpers import (
    GENERIC_LOGIN_ERROR,
    is_same_document,
    mark_document,
    panel_heading,
    settings_link,
    settled,
    url_ending,
)
from workspaces import Workspace


def give_workspaces(person, *handles):
    with database.db.connection_context():
        user = models.User.get(models.User.handle == person.handle)
        for handle in handles:
            Workspace.provision(user, handle)


def host(user_handle, workspace_handle):
    return f'{user_handle}-{workspace_handle}.{models.Config.workspace_domain}'


def open_advanced(page):
    settings_link(page, 'Advanced').click()
    expect(panel_heading(page, 'Advanced')).to_be_visible()
    settled(page)


def host_changes(region):
    return region.get_by_role('list').get_by_role('listitem')


def test_change_the_handle_after_seeing_which_hosts_change(page, javascript, person):
    person.sign_up(page)
    give_workspaces(person, 'analytics', 'staging')
    old, new = person.handle, person.handle + 'x'
    open_advanced(page)
    section = page.get_by_role('region', name='Handle')
    expect(section).to_contain_text('changing it will result in changing the DNS name for ALL '
                                    'of your workspaces')
    field = section.get_by_role('textbox', name='Handle', exact=True)
    expect(field).to_have_value(old)

    mark_document(page)
    field.fill(new)
    preview = host_changes(section)
    if javascript:  # the preview follows the typing, before any Save
        expect(preview).to_have_count(2)
        expect(preview.first.locator('code')).to_have_text([host(old, 'analytics'),
                                                            host(new, 'analytics')])
        field.fill('admin')
        expect(section.get_by_text('This handle is reserved. Choose another.')).to_be_visible()
        expect(preview).to_have_count(0)
        field.fill(new)
        expect(preview).to_have_count(2)
        settled(page)
    section.get_by_role('button', name='Save').click()

    expect(section).to_contain_text(f'Change your handle from {old} to {new}?')
    expect(preview).to_have_count(2)
    expect(preview.nth(1).locator('code')).to_have_text([host(old, 'staging'),
                                                         host(new, 'staging')])
    assert is_same_document(page) is javascript
    settled(page)
    section.get_by_role('button', name='Change handle').click()

    expect(page).to_have_url(url_ending(f'/user/{new}/settings/advanced'))
    expect(page.get_by_role('status')).to_have_text(f'Handle changed to {new}.')
    expect(page.get_by_role('textbox', name='Handle', exact=True)).to_have_value(new)

    page.goto('/')
    workspaces = page.get_by_role('region', name='Your workspaces')
    expect(workspaces.get_by_text(host(new, 'analytics'), exact=True)).to_be_visible()
    expect(workspaces.get_by_text(host(new, 'staging'), exact=True)).to_be_visible()
    expect(workspaces.get_by_text(host(old, 'analytics'), exact=True)).to_have_count(0)

    page.goto(f'/user/{old}/settings/profile')  # the old address leads to the new one
    expect(page).to_have_url(url_ending(f'/user/{new}/settings/profile'))


def test_delete_the_account_by_typing_the_handle(page, javascript, person):
    person.sign_up(page)
    open_advanced(page)
    section = page.get_by_role('region', name='Delete Personal Account')
    mark_document(page)
    section.get_by_role('button', name='Delete Personal Account').click()

    confirm = section.get_by_role('textbox', name='Type your handle to confirm')
    expect(confirm).to_be_visible()
    assert is_same_document(page) is javascript
    expect(section).to_contain_text('held for 30 days')
    delete = section.get_by_role('button', name='Delete', exact=True)
    settled(page)
    if javascript:
        expect(delete).to_be_disabled()
        confirm.fill(person.handle[:-1])
        expect(delete).to_be_disabled()
        confirm.fill(person.handle)
        expect(delete).to_be_enabled()
    else:  # the server checks what was typed
        expect(delete).to_be_enabled()
        confirm.fill(person.handle[:-1])
        delete.click()
        expect(section.get_by_text('Type your handle exactly as it is shown')).to_be_visible()
        confirm = page.get_by_role('textbox', name='Type your handle to confirm')
        expect(confirm).to_have_value(person.handle[:-1])
        confirm.fill(person.handle)
    delete.click()

    expect(page).to_have_url(url_ending('/goodbye'))
    expect(page.get_by_role('heading', level=1)).to_have_text('Your account has been deleted')
    person.log_in(page)
    expect(page.get_by_text(GENERIC_LOGIN_ERROR)).to_be_visible()


def test_revoking_another_session_logs_that_browser_out(new_page, page, javascript, person):
    person.sign_up(page)
    other = new_page(javascript=True)
    person.log_in(other)
    expect(other).to_have_url(url_ending('/'))
    open_advanced(page)
    sessions = page.get_by_role('region', name='Sessions')
    rows = sessions.get_by_role('row')
    expect(rows).to_have_count(3)  # the header and two sessions
    expect(sessions.get_by_role('row').filter(has_text='This session')).to_have_count(1)

    mark_document(page)
    sessions.get_by_role('button', name='Revoke').click()

    expect(rows).to_have_count(2)
    expect(page.get_by_role('status')).to_contain_text(re.compile(r'^Session revoked: .+'))
    expect(sessions.get_by_role('button', name='Revoke')).to_have_count(0)
    assert is_same_document(page) is javascript
    other.goto(person.profile_path)
    expect(other).to_have_url(re.compile(r'/login\?next='))
    expect(other.get_by_role('heading', level=1, name='Log in')).to_be_visible()
    page.reload()
    expect(panel_heading(page, 'Advanced')).to_be_visible()  # this browser is still in


@pytest.mark.parametrize('color_scheme', ['light', 'dark'])
def test_advanced_has_no_serious_accessibility_violations(new_page, axe, person, color_scheme):
    page = new_page(javascript=True, color_scheme=color_scheme)
    audit = axe(page)
    person.sign_up(page)
    give_workspaces(person, 'analytics')
    other = new_page(javascript=True)
    person.log_in(other)
    open_advanced(page)
    audit('advanced')

    handle = page.get_by_role('region', name='Handle')
    handle.get_by_role('textbox', name='Handle', exact=True).fill(person.handle + 'x')
    expect(host_changes(handle)).to_have_count(1)
    audit('handle, live preview')
    handle.get_by_role('button', name='Save').click()
    expect(handle).to_contain_text('Change your handle from')
    audit('handle, preview step')
    handle.get_by_role('link', name='Cancel').click()
    expect(handle.get_by_role('button', name='Save')).to_be_visible()

    delete = page.get_by_role('region', name='Delete Personal Account')
    delete.get_by_role('button', name='Delete Personal Account').click()
    confirm = delete.get_by_role('textbox', name='Type your handle to confirm')
    expect(confirm).to_be_visible()
    audit('delete, confirmation')
    confirm.fill('wrong')
    confirm.press('Enter')  # a disabled default button: the form is not submitted
    expect(delete.get_by_role('button', name='Delete', exact=True)).to_be_disabled()
    expect(confirm).to_have_value('wrong')
    audit('delete, text not matching')

    page.get_by_role('region', name='Sessions').get_by_role('button', name='Revoke').click()
    expect(page.get_by_role('status')).to_contain_text('Session revoked')
    audit('sessions, revoked')

    audit.assert_clean(f'{color_scheme} scheme')
