"""Settings → Tokens in a real Chromium: create, reveal, copy, deactivate, delete; JS on/off."""
import re

import pytest
from playwright.sync_api import expect

from tests.browser.helpers import (
    age_the_login,
    confirm_password,
    is_same_document,
    mark_document,
    panel_heading,
    settings_link,
    settled,
    url_ending,
)

WARNING = 'Make a secure note of the token as you will not be able to retrieve it again.'
LIMIT_REASON = ('You already have 2 tokens, the most you can have at a time. '
                'Delete one to create another.')


def tokens_path(person):
    return f'/user/{person.handle}/settings/tokens'


def open_tokens(page, person):
    person.sign_up(page)
    settings_link(page, 'Tokens').click()
    expect(page).to_have_url(url_ending(tokens_path(person)))
    expect(panel_heading(page, 'Tokens')).to_be_visible()
    settled(page)


def new_token(page):
    """Press New Token; returns the secret field that is on screen once the new row is listed."""
    rows = page.get_by_role('rowheader')
    before = rows.count()
    page.get_by_role('button', name='New Token').click()
    expect(rows).to_have_count(before + 1)  # the new page, or the swap, has arrived
    expect(page.get_by_text(WARNING)).to_be_visible()
    settled(page)
    return page.get_by_label('Your new token').filter(visible=True)


def token_row(page, secret):
    return page.get_by_role('row').filter(
        has=page.get_by_role('rowheader', name=f'pst_…{secret[-4:]}', exact=True))


def api_status(page, secret):
    """What /api/v0/actor answers to this secret as a bearer token."""
    response = page.request.get('/api/v0/actor', headers={'Authorization': f'Bearer {secret}'})
    return response.status


def choose_option(page, secret, name):
    row = token_row(page, secret)
    row.get_by_role('button', name='Token options').click()
    option = row.get_by_role('button', name=name).or_(row.get_by_role('link', name=name))
    expect(option).to_be_visible()
    option.click()


def test_new_token_asks_for_the_password_when_it_was_typed_long_ago(page, javascript, person):
    open_tokens(page, person)
    age_the_login(person)
    page.get_by_role('button', name='New Token').click()
    confirm_password(page, person)
    expect(page).to_have_url(url_ending(tokens_path(person)))
    expect(page.get_by_text('You have no tokens yet.')).to_be_visible()  # nothing made yet
    settled(page)
    secret = new_token(page).input_value()
    assert api_status(page, secret) == 200


def test_create_reveal_copy_deactivate_and_delete_a_token(page, javascript, person,
                                                          live_server):
    if javascript:
        page.context.grant_permissions(['clipboard-read', 'clipboard-write'], origin=live_server)
    open_tokens(page, person)
    expect(page.get_by_text('You can have up to 2 tokens at a time.')).to_be_visible()
    expect(page.get_by_text('You have no tokens yet.')).to_be_visible()

    mark_document(page)
    field = new_token(page)
    reveal = page.get_by_role('button', name='Reveal token')
    copy = page.get_by_role('button', name='Copy token')
    expect(field).not_to_be_editable()
    if javascript:
        assert is_same_document(page), 'the secret is swapped in, not a new page'
        expect(field).to_have_attribute('type', 'password')
        expect(reveal).to_have_attribute('aria-pressed', 'false')
        reveal.click()
        expect(field).to_have_attribute('type', 'text')
        expect(reveal).to_have_attribute('aria-pressed', 'true')
        secret = field.input_value()
        copy.click()
        expect(page.get_by_role('status').filter(has_text='Copied')).to_have_text('Copied')
        assert page.evaluate('navigator.clipboard.readText()') == secret
        reveal.click()
        expect(field).to_have_attribute('type', 'password')
    else:
        expect(page).to_have_url(url_ending(tokens_path(person)))
        expect(field).to_have_attribute('type', 'text')  # plain, so it can be selected
        expect(reveal).to_be_hidden()
        expect(copy).to_be_hidden()
        secret = field.input_value()
    assert re.fullmatch(r'pst_[0-9A-Za-z]{36}', secret)
    expect(field).to_have_accessible_description(WARNING)
    expect(token_row(page, secret)).to_contain_text('Active')
    expect(token_row(page, secret)).to_contain_text('Never')
    assert api_status(page, secret) == 200

    second = new_token(page).input_value()
    assert second != secret
    expect(page.get_by_role('button', name='New Token')).to_be_disabled()
    expect(page.get_by_role('button', name='New Token')).to_have_accessible_description(
        LIMIT_REASON)

    if javascript:  # Back to the page after leaving it: the secrets are not in htmx's cache
        settings_link(page, 'Profile').click()
        expect(panel_heading(page, 'Profile')).to_be_visible()
        page.go_back()
        expect(panel_heading(page, 'Tokens')).to_be_visible()
        expect(token_row(page, second)).to_be_visible()
        assert secret not in page.content() and second not in page.content()
        page.reload()
    else:
        page.goto(tokens_path(person))  # reloading would post the form again
    expect(token_row(page, secret)).to_be_visible()
    expect(token_row(page, second)).to_be_visible()
    expect(page.get_by_text(WARNING)).to_have_count(0)
    assert secret not in page.content() and second not in page.content()
    settled(page)

    mark_document(page)
    choose_option(page, secret, 'Deactivate')
    expect(page.get_by_role('status').first).to_have_text(
        f'Token pst_…{secret[-4:]} deactivated.')
    expect(token_row(page, secret)).to_contain_text('Inactive')
    expect(token_row(page, second)).to_contain_text('Active')
    assert is_same_document(page) is javascript
    if javascript:  # focus goes back to the row's menu button
        expect(token_row(page, secret).get_by_role('button', name='Token options')).to_be_focused()
    assert api_status(page, secret) == 401
    assert api_status(page, second) == 200
    settled(page)

    choose_option(page, secret, 'Delete')
    question = page.get_by_text(f'Delete token pst_…{secret[-4:]}?')
    expect(question).to_be_visible()
    if javascript:
        assert is_same_document(page), 'the confirmation takes the place of the row'
        expect(page.locator(':focus')).to_contain_text(f'Delete token pst_…{secret[-4:]}?')
    else:
        expect(page).to_have_url(re.compile(re.escape(tokens_path(person)) + r'/t_\w+/delete$'))
        expect(panel_heading(page, f'Delete token pst_…{secret[-4:]}?')).to_be_visible()
    settled(page)
    page.get_by_role('link', name='Cancel').click()
    expect(question).to_have_count(0)
    expect(token_row(page, secret)).to_be_visible()
    assert api_status(page, secret) == 401, 'cancelled: still there, still inactive'
    settled(page)

    choose_option(page, secret, 'Delete')
    expect(question).to_be_visible()
    settled(page)
    page.get_by_role('button', name='Delete', exact=True).click()
    expect(page.get_by_role('status').first).to_have_text(f'Token pst_…{secret[-4:]} deleted.')
    expect(token_row(page, secret)).to_have_count(0)
    expect(token_row(page, second)).to_be_visible()
    expect(page).to_have_url(url_ending(tokens_path(person)))
    expect(page.get_by_role('button', name='New Token')).to_be_enabled()
    assert is_same_document(page) is javascript
    assert api_status(page, secret) == 401
    assert api_status(page, second) == 200


@pytest.mark.parametrize('color_scheme', ['light', 'dark'])
def test_tokens_page_has_no_serious_accessibility_violations(new_page, axe, person,
                                                             color_scheme):
    page = new_page(javascript=True, color_scheme=color_scheme)
    audit = axe(page)

    open_tokens(page, person)
    audit('no tokens')
    secret = new_token(page).input_value()
    audit('new token shown')
    page.get_by_role('button', name='Reveal token').click()
    audit('new token revealed')
    new_token(page)
    audit('at the limit')
    token_row(page, secret).get_by_role('button', name='Token options').click()
    audit('token options open')
    token_row(page, secret).get_by_role('button', name='Deactivate').click()
    expect(token_row(page, secret)).to_contain_text('Inactive')
    audit('inactive token')
    choose_option(page, secret, 'Delete')
    expect(page.get_by_role('button', name='Delete', exact=True)).to_be_visible()
    audit('delete confirmation')

    audit.assert_clean(f'{color_scheme} scheme')
