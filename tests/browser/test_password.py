"""Settings → Profile → Database Password in a real Chromium: Rotate Password, then watch every
workspace go from Pending to Applied; with JavaScript by polling, without it by reloading."""
import re
import time
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

import database
import models
import workspaces
from tests.browser.helpers import is_same_document, mark_document, settled
from views.profile import PROPAGATED, ROTATED, ROTATED_ENDING

WORKSPACES = ('analytics', 'staging')
QUESTION = 'Rotate the database password now?'


def open_profile_with_workspaces(page, person, live_worker, handles=WORKSPACES):
    """Sign up, give the new account workspaces (in the live server's database) and have
    their databases made, open Profile."""
    person.sign_up(page)
    with database.db.connection_context():
        user = models.User.get(models.User.handle == person.handle)
        for handle in handles:
            workspaces.Workspace.provision(user, handle)
    live_worker.finish()
    page.goto(person.profile_path)
    expect(password_section(page)).to_be_visible()
    settled(page)


def password_section(page):
    return page.get_by_role('region', name='Database Password')


def workspace_item(page, handle):
    return password_section(page).get_by_role('listitem').filter(
        has=page.get_by_role('heading', name=handle, exact=True))


def expect_state(page, state, timeout=None):
    for handle in WORKSPACES:
        expect(workspace_item(page, handle)).to_contain_text(
            re.compile(rf'Password status: {state}\b'), timeout=timeout)


def masked_strings(page):
    return [connection_string(page, handle).inner_text() for handle in WORKSPACES]


def connection_string(page, handle):
    return page.get_by_role('group', name=f'Connection string of {handle}').locator('code')


def reload_until_applied(page, deadline_seconds=30):
    """Without JavaScript a reload is how the state is seen: reload until every workspace
    says Applied, giving each look a brief moment, within a deadline."""
    deadline = time.monotonic() + deadline_seconds
    while True:
        try:
            expect_state(page, 'Applied', timeout=500)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            page.reload()


def confirm_rotation(page, javascript, person):
    """Rotate Password, read the confirmation, confirm; returns the masked strings before."""
    before = masked_strings(page)
    expect_state(page, 'Applied')
    mark_document(page)
    password_section(page).get_by_role('button', name='Rotate Password').click()
    question = page.get_by_text(QUESTION)
    expect(question).to_be_visible()
    for words in ('A new password replaces the current one',
                  'It may take a couple of minutes to reach every workspace.',
                  'Existing connections are not terminated, unless you tick Also end open '
                  'connections.'):
        expect(password_section(page)).to_contain_text(words)
    if javascript:
        assert is_same_document(page), 'the confirmation is swapped into the section'
        expect(page.locator(':focus')).to_contain_text(QUESTION)
    else:
        expect(page).to_have_url(  # the step's button names it: no bare '?'
            re.compile(re.escape(person.profile_path + '/password/rotate?step=confirm') + '$'))
    settled(page)
    password_section(page).get_by_role('button', name='Rotate Password').click()
    expect(page.get_by_role('status').filter(has_text=ROTATED)).to_be_visible()
    return before


def test_rotate_password_and_watch_every_workspace_reach_applied(
        page, javascript, person, live_worker):
    open_profile_with_workspaces(page, person, live_worker)
    live_worker.pause()  # the server would have the new password before Pending is seen

    before = confirm_rotation(page, javascript, person)

    expect_state(page, 'Pending')
    after = masked_strings(page)
    assert after != before and all('*' in value for value in after)
    if javascript:
        assert is_same_document(page), 'rotated in place'
        settled(page)
        # Polling swaps only the states: focus stays put and a revealed string stays shown.
        staging = workspace_item(page, 'staging')
        staging.get_by_role('button', name='Reveal password').click()
        revealed = connection_string(page, 'staging')
        expect(revealed).not_to_have_text(re.compile(r'\*'))
        expect(revealed).to_be_focused()  # htmx's autofocus has run, so it cannot move focus later
        rotate = password_section(page).get_by_role('button', name='Rotate Password')
        rotate.focus()
        live_worker.resume()
        expect_state(page, 'Applied', timeout=20_000)
        assert is_same_document(page), 'the states arrived without a reload'
        expect(rotate).to_be_focused()
        expect(revealed).not_to_have_text(re.compile(r'\*'))
        expect(page.get_by_role('status').filter(has_text=PROPAGATED)).to_be_visible()
        expect(page.locator('#password-poll[hx-trigger]')).to_have_count(0)  # polling stopped
    else:
        expect(page).to_have_url(re.compile(re.escape(person.profile_path) + '#database-password$'))
        live_worker.resume()
        reload_until_applied(page)
    for handle in WORKSPACES:  # Applied says when
        expect(workspace_item(page, handle).locator('time')).to_have_count(1)


def test_also_end_open_connections_is_a_checkbox_off_by_default(
        page, javascript, person, live_worker):
    open_profile_with_workspaces(page, person, live_worker, handles=('analytics',))
    password_section(page).get_by_role('button', name='Rotate Password').click()
    expect(page.get_by_text(QUESTION)).to_be_visible()
    settled(page)
    ending = password_section(page).get_by_role('checkbox', name='Also end open connections')
    expect(ending).not_to_be_checked()
    ending.check()
    password_section(page).get_by_role('button', name='Rotate Password').click()
    expect(page.get_by_role('status').filter(has_text=ROTATED_ENDING)).to_be_visible()
    with database.db.connection_context():
        user = models.User.get(models.User.handle == person.handle)
        [job] = workspaces.PropagationJob.select().where(
            workspaces.PropagationJob.user_id == user.id,
            workspaces.PropagationJob.reason == 'user.password.rotate')
    assert job.end_connections


def test_the_sixth_rotation_in_an_hour_says_why_next_to_the_button(
        page, javascript, person, live_worker):
    open_profile_with_workspaces(page, person, live_worker, handles=('analytics',))
    expect(password_section(page)).to_contain_text('At most 5 an hour.')
    for _ in range(6):
        password_section(page).get_by_role('button', name='Rotate Password').click()
        expect(page.get_by_text(QUESTION)).to_be_visible()
        settled(page)
        password_section(page).get_by_role('button', name='Rotate Password').click()
        expect(page.get_by_text(QUESTION)).to_have_count(0)
        settled(page)
    refusal = password_section(page).get_by_role('alert')
    expect(refusal).to_have_text('You can rotate your database password at most 5 an hour. '
                                 'Try again later; nothing was changed.')
    rotate = password_section(page).get_by_role('button', name='Rotate Password')
    expect(rotate).to_be_visible()
    with database.db.connection_context():
        user = models.User.get(models.User.handle == person.handle)
        assert workspaces.DatabasePassword.for_user(user).version == 6, 'five rotated'


def test_cancel_leaves_the_password_as_it_was(page, javascript, person, live_worker):
    open_profile_with_workspaces(page, person, live_worker, handles=('analytics',))
    before = connection_string(page, 'analytics').inner_text()
    password_section(page).get_by_role('button', name='Rotate Password').click()
    expect(page.get_by_text(QUESTION)).to_be_visible()
    settled(page)

    password_section(page).get_by_role('link', name='Cancel').click()

    expect(page.get_by_text(QUESTION)).to_have_count(0)
    rotate = password_section(page).get_by_role('button', name='Rotate Password')
    expect(rotate).to_be_visible()
    if javascript:
        expect(rotate).to_be_focused()
    expect(connection_string(page, 'analytics')).to_have_text(before)
    expect(workspace_item(page, 'analytics')).to_contain_text('Password status: Applied')


@pytest.mark.parametrize('color_scheme', ['light', 'dark'])
def test_database_password_section_has_no_serious_accessibility_violations(
        new_page, axe, person, color_scheme, live_worker):
    page = new_page(javascript=True, color_scheme=color_scheme)
    audit = axe(page)

    open_profile_with_workspaces(page, person, live_worker)
    audit('applied')
    password_section(page).get_by_role('button', name='Rotate Password').click()
    expect(page.get_by_text(QUESTION)).to_be_visible()
    audit('confirmation')
    live_worker.pause()  # resumed after the test
    password_section(page).get_by_role('button', name='Rotate Password').click()
    expect(page.get_by_role('status').filter(has_text=ROTATED)).to_be_visible()
    expect_state(page, 'Pending')
    audit('pending')

    audit.assert_clean(f'{color_scheme} scheme')


@pytest.mark.parametrize('width', [1280, 360])
def test_connection_strings_in_profile_wrap_whole_and_keep_their_width(
        new_page, person, live_worker, width):
    """Each connection string is shown whole (no field cutting it off at the user's handle),
    within the screen, and revealing or hiding its password leaves its block where it was."""
    page = new_page(javascript=True)
    page.set_viewport_size({'width': width, 'height': 800})
    open_profile_with_workspaces(page, person, live_worker)
    strings = [connection_string(page, handle) for handle in WORKSPACES]
    boxes = [string.bounding_box() for string in strings]
    for string, box in zip(strings, boxes):
        assert string.evaluate('e => e.scrollWidth <= e.clientWidth')
        assert box['x'] >= 0 and box['x'] + box['width'] <= width
        assert string.inner_text().endswith('?hostaddr=127.0.0.1')
    assert page.evaluate('document.documentElement.scrollWidth') <= width
    assert boxes[0]['width'] == boxes[1]['width']

    staging = workspace_item(page, 'staging')
    staging.get_by_role('button', name='Reveal password').click()
    expect(strings[1]).not_to_have_text(re.compile(r'\*'))
    settled(page)
    revealed = strings[1].bounding_box()
    assert (revealed['x'], revealed['width'], revealed['height']) == (
        boxes[1]['x'], boxes[1]['width'], boxes[1]['height'])
    assert page.evaluate('document.documentElement.scrollWidth') <= width
    staging.get_by_role('button', name='Hide password').click()
    expect(strings[1]).to_have_text(re.compile(r'\*'))
    hidden = strings[1].bounding_box()
    assert (hidden['x'], hidden['width'], hidden['height']) == (
        boxes[1]['x'], boxes[1]['width'], boxes[1]['height'])


def test_reveal_and_hide_password_keep_the_user_on_profile(page, javascript, person,
                                                           live_worker):
    """Reveal password and Hide password on Profile: in place with JavaScript; without it the
    Profile page again (it used to be the console home), that one string revealed."""
    open_profile_with_workspaces(page, person, live_worker)
    mark_document(page)
    staging = workspace_item(page, 'staging')
    staging.get_by_role('button', name='Reveal password').click()
    expect(connection_string(page, 'staging')).not_to_have_text(re.compile(r'\*'))
    expect(page.get_by_role('heading', name='Profile', level=2)).to_be_visible()
    expect(connection_string(page, 'analytics')).to_have_text(re.compile(r'\*'))
    assert urlsplit(page.url).path.startswith(person.profile_path)
    assert is_same_document(page) is javascript
    settled(page)

    staging.get_by_role('button', name='Hide password').click()
    expect(connection_string(page, 'staging')).to_have_text(re.compile(r'\*'))
    expect(page.get_by_role('heading', name='Profile', level=2)).to_be_visible()
    if javascript:
        assert is_same_document(page)
        expect(staging.get_by_role('button', name='Reveal password')).to_be_focused()
    else:
        expect(page).to_have_url(re.compile(re.escape(person.profile_path) + '#connection-w_'))
