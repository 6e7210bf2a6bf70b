"""The console home in a real Chromium: create, reveal, copy and delete workspaces; JS on/off."""
import re
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from tests.browser.helpers import (
    age_the_login,
    confirm_password,
    is_same_document,
    mark_document,
    settled,
    url_ending,
)
from tests.helpers import logged_in_as

RULE_ERROR = 'A workspace handle is 1–23 lowercase letters or digits.'
PASSWORD = r'[a-z0-9]{4}-[a-z0-9]{4}-[a-z0-9]{4}-[a-z0-9]{4}'
MASKED = r'[a-z0-9]{2}\*\*-\*{4}-\*{4}-\*\*[a-z0-9]{2}'


def url_after_hide(javascript):
    """Where Hide password leaves the page: the home page as it was with JavaScript; without
    it, the home page at the row whose string was revealed."""
    return url_ending('/') if javascript else re.compile(r'/#connection-w_\w+$')


def open_home(page, person):
    """Sign up, then follow the brand link in the top bar to the console home."""
    person.sign_up(page)
    page.get_by_role('banner').get_by_role('link', name='Penstock').click()
    expect(page).to_have_url(url_ending('/'))
    expect(page.get_by_role('heading', level=1, name='Workspaces')).to_be_visible()
    settled(page)


def workspace_row(page, handle):
    return page.get_by_role('listitem').filter(
        has=page.get_by_role('heading', level=2, name=handle, exact=True))


def connection_field(page, handle):
    """The block that shows a workspace's connection string (in the group it names)."""
    return page.get_by_role('group', name=f'Connection string of {handle}', exact=True
                            ).locator('code')


def connection_pattern(person, handle, password, port):
    """The string as shown: the workspace server's own port, and hostaddr= its address."""
    return re.compile(rf'postgresql://{re.escape(person.handle)}:{password}@'
                      rf'{re.escape(person.handle)}-{handle}\.workspaces\.penstock\.test:{port}/'
                      r'[a-z][a-z0-9]{7}\?hostaddr=127\.0\.0\.1$')


def create_workspace(page, handle):
    page.get_by_label('Workspace handle').fill(handle)
    page.get_by_role('button', name='Create workspace').click()


def test_create_reveal_copy_and_delete_a_workspace(page, javascript, person, live_server,
                                                   live_worker, workspace_server):
    port = workspace_server.port
    if javascript:
        page.context.grant_permissions(['clipboard-read', 'clipboard-write'], origin=live_server)
    open_home(page, person)
    expect(page.get_by_text('You have no workspaces yet.')).to_be_visible()
    expect(page.get_by_label('Workspace handle')).to_have_accessible_description(
        '1–23 lowercase letters or digits. You can have up to 10 workspaces, with up to 20 '
        'connections open at once across them and up to 1GB of temporary files per connection.')

    mark_document(page)
    create_workspace(page, 'Bad!')
    field = page.get_by_label('Workspace handle')
    expect(page.get_by_text(RULE_ERROR)).to_be_visible()
    expect(field).to_have_attribute('aria-invalid', 'true')
    expect(field).to_have_accessible_description(re.compile(re.escape(RULE_ERROR)))
    expect(field).to_have_value('Bad!')
    assert is_same_document(page) is javascript
    if javascript:  # focus goes to the refused field, so its error is read out
        expect(field).to_be_focused()
    settled(page)

    create_workspace(page, 'analytics')
    expect(page.get_by_role('status').first).to_have_text('Workspace analytics created.')
    row = workspace_row(page, 'analytics')
    expect(row).to_be_visible()
    expect(row).to_contain_text(f'{person.handle}-analytics.workspaces.penstock.test')
    expect(page.get_by_text('You have no workspaces yet.')).to_have_count(0)
    expect(page.get_by_label('Workspace handle')).to_have_value('')
    expect(page).to_have_url(url_ending('/'))
    assert is_same_document(page) is javascript
    if javascript:
        expect(row.get_by_role('heading', name='analytics')).to_be_focused()
    connection = connection_field(page, 'analytics')
    expect(connection).to_have_text(connection_pattern(person, 'analytics', MASKED, port))
    settled(page)

    copy = row.get_by_role('button', name='Copy connection string')
    if javascript:  # the real string reaches the clipboard without entering the page
        copy.click()
        expect(row.get_by_role('status')).to_have_text('Copied')
        copied = page.evaluate('navigator.clipboard.readText()')
        assert connection_pattern(person, 'analytics', PASSWORD, port).match(copied)
        assert copied not in page.content()
    else:
        expect(copy).to_be_hidden()

    mark_document(page)
    row.get_by_role('button', name='Reveal password').click()
    expect(connection).to_have_text(connection_pattern(person, 'analytics', PASSWORD, port))
    revealed = connection.inner_text()
    live_worker.finish()  # its database is made: the string logs in as it is
    assert logged_in_as(revealed) == (person.handle, urlsplit(revealed).path.lstrip('/'))
    assert is_same_document(page) is javascript
    if javascript:
        assert revealed == copied
        expect(connection).to_be_focused()
    settled(page)
    row.get_by_role('button', name='Hide password').click()
    expect(connection).to_have_text(connection_pattern(person, 'analytics', MASKED, port))
    expect(page).to_have_url(url_after_hide(javascript))
    assert revealed not in page.content()
    if javascript:
        expect(row.get_by_role('button', name='Reveal password')).to_be_focused()
    settled(page)

    create_workspace(page, 'staging')
    expect(workspace_row(page, 'staging')).to_be_visible()
    settled(page)

    # Deleting drops the database: a password typed long ago is asked for again first, and
    # then the question is asked on a page of its own.
    age_the_login(person)
    row.get_by_role('link', name='Delete').click()
    confirm_password(page, person)
    expect(page).to_have_url(re.compile(r'/workspaces/w_\w+/delete$'))
    expect(page.get_by_role('heading', level=1, name='Delete workspace analytics?')
           ).to_be_visible()
    settled(page)
    page.get_by_role('link', name='Cancel').click()
    expect(page).to_have_url(url_ending('/'))
    expect(row).to_be_visible()
    settled(page)

    mark_document(page)
    row.get_by_role('link', name='Delete').click()
    question = page.get_by_text('Delete workspace analytics?').first
    expect(question).to_be_visible()
    if javascript:
        assert is_same_document(page), 'the confirmation takes the place of the row'
        expect(page.locator(':focus')).to_contain_text('Delete workspace analytics?')
    else:
        expect(page).to_have_url(re.compile(r'/workspaces/w_\w+/delete$'))
        expect(page.get_by_role('heading', level=1, name='Delete workspace analytics?')
               ).to_be_visible()
    settled(page)
    page.get_by_role('link', name='Cancel').click()
    expect(question).to_have_count(0)
    expect(row).to_be_visible()
    if javascript:
        expect(row.get_by_role('heading', name='analytics')).to_be_focused()
    settled(page)

    row.get_by_role('link', name='Delete').click()
    expect(question).to_be_visible()
    settled(page)
    page.get_by_role('button', name='Delete', exact=True).click()
    expect(page.get_by_role('status').first).to_have_text('Workspace analytics deleted.')
    expect(workspace_row(page, 'analytics')).to_have_count(0)
    expect(workspace_row(page, 'staging')).to_be_visible()
    expect(page).to_have_url(url_ending('/'))
    assert is_same_document(page) is javascript
    if javascript:
        expect(page.get_by_label('Workspace handle')).to_be_focused()

    page.reload()
    expect(workspace_row(page, 'analytics')).to_have_count(0)
    expect(workspace_row(page, 'staging')).to_be_visible()


@pytest.mark.parametrize('color_scheme', ['light', 'dark'])
def test_home_has_no_serious_accessibility_violations(new_page, axe, person, color_scheme):
    page = new_page(javascript=True, color_scheme=color_scheme)
    audit = axe(page)

    open_home(page, person)
    audit('no workspaces')
    create_workspace(page, 'Bad!')
    expect(page.get_by_text(RULE_ERROR)).to_be_visible()
    audit('refused handle')
    create_workspace(page, 'analytics')
    row = workspace_row(page, 'analytics')
    expect(row).to_be_visible()
    audit('one workspace')
    row.get_by_role('button', name='Reveal password').click()
    expect(row.get_by_role('button', name='Hide password')).to_be_visible()
    audit('password revealed')
    row.get_by_role('link', name='Delete').click()
    expect(page.get_by_text('Delete workspace analytics?')).to_be_visible()
    audit('delete confirmation')

    audit.assert_clean(f'{color_scheme} scheme')


def overflow(page):
    """How far the page is wider than the viewport (0: no sideways scrolling)."""
    return page.evaluate('document.documentElement.scrollWidth - window.innerWidth')


def shown_whole(locator):
    """The element shows all of its text: nothing is cut off or scrolled away inside it."""
    return locator.evaluate('e => e.scrollWidth <= e.clientWidth && e.scrollHeight <= '
                            'e.clientHeight')


@pytest.mark.parametrize('width', [1280, 360])
def test_a_connection_string_wraps_whole_and_keeps_its_width_when_revealed(
        page, javascript, person, live_server, width):
    page.set_viewport_size({'width': width, 'height': 800})
    open_home(page, person)
    handle = 'w' * 23  # the longest workspace handle: the longest host
    create_workspace(page, handle)
    row = workspace_row(page, handle)
    expect(row).to_be_visible()
    settled(page)
    connection = connection_field(page, handle)
    expect(connection).to_have_text(re.compile(r'\*\*-\*{4}-\*{4}-\*\*.*hostaddr=127\.0\.0\.1$'))
    masked = connection.bounding_box()
    reveal = row.get_by_role('button', name='Reveal password')
    toggle = (reveal.evaluate('e => e.tagName'), reveal.bounding_box()['width'])
    assert shown_whole(connection)
    assert masked['x'] + masked['width'] <= width and overflow(page) == 0
    if width == 360:  # the string is longer than a phone's line: it wraps, not cut off
        assert masked['height'] > 2 * 16
    block, card = connection.locator('xpath=..').bounding_box(), row.bounding_box()
    assert block['width'] >= card['width'] - 2 * 22, 'as wide as its card (less padding)'

    reveal.click()
    expect(connection).to_have_text(re.compile(PASSWORD))
    revealed = connection.bounding_box()
    assert (revealed['x'], revealed['width']) == (masked['x'], masked['width'])
    assert revealed['height'] == masked['height']  # the mask is as long as the password
    assert shown_whole(connection) and overflow(page) == 0
    hide = row.get_by_role('button', name='Hide password')
    expect(hide).to_be_visible()
    assert (hide.evaluate('e => e.tagName'), hide.bounding_box()['width']) == toggle, \
        'Reveal and Hide: one control, one width'
    assert toggle[0] == 'BUTTON'
    copy = row.get_by_role('button', name='Copy connection string')
    if javascript:
        box = copy.bounding_box()
        assert box['x'] + box['width'] <= width

    settled(page)
    hide.click()
    expect(connection).to_have_text(re.compile(r'\*\*-\*{4}-\*{4}-\*\*'))
    hidden = connection.bounding_box()
    assert (hidden['x'], hidden['width'], hidden['height']) == (
        masked['x'], masked['width'], masked['height'])
    expect(page).to_have_url(url_after_hide(javascript))
