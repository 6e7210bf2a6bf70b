"""Audit Log, Reset authentication and CLI login in a real Chromium, with and without JS."""
import datetime
import re
import zoneinfo

import pytest
from playwright.sync_api import expect

import credentials
import database
import models
from tests.browser.helpers import (
    age_the_login,
    call,
    confirm_password,
    is_same_document,
    mark_document,
    panel_heading,
    settings_link,
    settled,
    url_ending,
)

CODE_HINT = "Expires in 15 minutes. Don't share this code with anyone."


def account(person):
    with database.db.connection_context():
        return models.User.get(models.User.handle == person.handle)


def issue_token(person):
    with database.db.connection_context():
        return credentials.Token.issue(account(person))[1]


def write_records(person, count):
    """`count` token.create records a second apart after now, so they are the newest."""
    start = models.utcnow() + datetime.timedelta(minutes=1)
    with database.db.connection_context():
        user = account(person)
        for i in range(count):
            record = models.AuditRecord.write('token.create', user, '192.0.2.1',
                                              data={'token_id': f't_{i}', 'last4': f'{i:04d}'})
            (models.AuditRecord.update(created_at=start + datetime.timedelta(seconds=i))
             .where(models.AuditRecord.id == record.id).execute())


# One record of every action type, with data as the app writes it: the log a long-lived
# account has. A display name this long and IDs are what once widened the page.
EVERY_KIND = [
    ('user.signup', {}),
    ('user.login', {'session_id': 's_' + 'q' * 20}),
    ('user.login.failed', {'session_id': 's_' + 'r' * 20}),
    ('user.logout', {'session_id': 's_' + 'q' * 20}),
    ('user.update', {'display_name': {'old': None, 'new': 'Maximiliana Oyelaran-Fitzgerald'}}),
    ('user.update', {'handle': {'old': 'maximiliana-oyelaran', 'new': 'max-oyelaran-fitz'}}),
    ('user.preferences.update', {'communication_community_updates': 'enabled',
                                 'communication_product_updates': 'disabled',
                                 'communication_tips_and_tricks': 'disabled'}),
    ('user.preferences.update', {'communication_product_updates': 'disabled', 'via': 'email'}),
    ('user.avatar.update', {}),
    ('user.avatar.delete', {}),
    ('user.password.rotate', {'version': 12, 'workspaces': 2}),
    ('user.password.rotate', {'version': 13, 'workspaces': 2, 'end_connections': True}),
    ('user.password.drift', {'role': 'maximiliana-oyelaran', 'workspaces': 3}),
    ('user.session.revoke', {'session_id': 's_' + 't' * 20}),
    ('workspace.create', {'workspace_id': 'w_' + 'u' * 20, 'handle': 'customer-analytics'}),
    ('workspace.delete', {'workspace_id': 'w_' + 'u' * 20, 'handle': 'customer-analytics'}),
    ('token.create', {'token_id': 't_' + 'v' * 20, 'last4': 'a1b2'}),
    ('token.update', {'token_id': 't_' + 'v' * 20, 'last4': 'a1b2',
                      'status': {'old': 'active', 'new': 'inactive'}}),
    ('token.delete', {'token_id': 't_' + 'v' * 20, 'last4': 'a1b2'}),
    ('user.authentication.reset', {'sessions': 3, 'tokens': 2, 'temporary_tokens': 1}),
    ('login_token.confirm', {'login_request_id': 'l_' + 'w' * 20,
                             'requested_from': '2001:db8:85a3::8a2e:370:7334'}),
    ('login_token.decline', {'login_request_id': 'l_' + 'x' * 20,
                             'requested_from': '198.51.100.200'}),
    ('login_token.create', {'login_request_id': 'l_' + 'w' * 20,
                            'temporary_token_id': 'p_' + 'y' * 20}),
    ('user.email.update', {'address': {'old': 'max.oyelaran@example.com',
                                       'new': 'maximiliana@example.org'}}),
    ('user.email.verify', {'address': 'maximiliana@example.org',
                           'replaced': 'max.oyelaran@example.com'}),
    ('email.failed', {'kind': 'user.password.rotate', 'code': 550}),
]
LONG_NAME = 'Maximiliana Evangelina Oyelaran-Fitzgerald'
LONG_IP = '2001:db8:ffff:ffff:ffff:ffff:ffff:fffe'


def write_every_kind(person):
    """Each of EVERY_KIND, a minute apart after now (the newest), by the person, who has a long
    display name, from a long IPv6 address."""
    assert {action for action, _ in EVERY_KIND} == set(models.AUDIT_ACTIONS)
    start = models.utcnow() + datetime.timedelta(minutes=1)
    with database.db.connection_context():
        user = account(person)
        user.set_display_name(LONG_NAME)
        for i, (action, data) in enumerate(EVERY_KIND):
            record = models.AuditRecord.write(action, user, LONG_IP, data=data)
            (models.AuditRecord.update(created_at=start + datetime.timedelta(minutes=i))
             .where(models.AuditRecord.id == record.id).execute())


@pytest.fixture
def sized_page(browser, live_server, javascript):
    """A page of a given screen: sized_page(width, height, phone) in a fresh context."""
    contexts = []

    def open_page(width, height, phone=False):
        context = browser.new_context(
            base_url=live_server, java_script_enabled=javascript,
            viewport={'width': width, 'height': height}, is_mobile=phone, has_touch=phone)
        context.set_default_timeout(10_000)
        contexts.append(context)
        return context.new_page()

    yield open_page
    for context in contexts:
        context.close()


def audit_entries(page):
    """The log's entries: the list is named by its heading (All records, or the filter's)."""
    return page.get_by_role('list', name=re.compile('records', re.I)).locator('> li')


def open_every_details(page):
    entries = audit_entries(page)
    for i in range(entries.count()):
        summary = entries.nth(i).get_by_text('Details', exact=True)
        if summary.count():
            summary.click()
            expect(entries.nth(i).locator('dl')).to_be_visible()


def login_page(page):
    expect(page).to_have_url(re.compile(r'/login(\?|$)'))
    expect(page.get_by_role('heading', level=1, name='Log in')).to_be_visible()


def test_reset_authentication_logs_out_every_browser_and_revokes_tokens(
        new_page, page, javascript, person, live_server):
    person.sign_up(page)
    htmx_browser, plain_browser = new_page(javascript=True), new_page(javascript=False)
    for other in (htmx_browser, plain_browser):
        person.log_in(other)
        expect(other).to_have_url(url_ending('/'))
        other.goto(person.profile_path)
    token = issue_token(person)
    assert call(f'{live_server}/api/v0/actor', token=token)[0] == 200

    settings_link(page, 'Advanced').click()
    expect(panel_heading(page, 'Advanced')).to_be_visible()
    settled(page)
    section = page.get_by_role('region', name='Reset authentication')
    expect(section).to_contain_text('temporary and user tokens')
    mark_document(page)
    section.get_by_role('button', name='Reset authentication').click()
    expect(section).to_contain_text('Reset authentication now?')
    assert is_same_document(page) is javascript  # with JS the step is inline
    if javascript:
        settled(page)
        section.get_by_role('link', name='Cancel').click()
        expect(section).not_to_contain_text('Reset authentication now?')
        expect(section.get_by_role('button', name='Reset authentication')).to_be_focused()
        settled(page)
        section.get_by_role('button', name='Reset authentication').click()
        expect(section).to_contain_text('Reset authentication now?')
        settled(page)
    section.get_by_role('button', name='Reset authentication').click()

    login_page(page)
    expect(page).to_have_url(url_ending('/login'))
    expect(page.get_by_role('status')).to_contain_text('Authentication was reset')
    page.goto(person.profile_path)
    login_page(page)

    mark_document(htmx_browser)
    settings_link(htmx_browser, 'Notifications').click()  # an htmx request
    login_page(htmx_browser)
    plain_browser.reload()  # a navigation
    login_page(plain_browser)

    status, body = call(f'{live_server}/api/v0/actor', token=token)
    assert status == 401 and body['status'] == 401


def test_audit_log_load_more_and_filter(new_page, javascript, person):
    page = new_page(javascript, timezone_id='America/New_York')
    person.sign_up(page)
    write_records(person, 60)  # with signup and login: 62 records
    settings_link(page, 'Audit Log').click()
    expect(panel_heading(page, 'Audit Log')).to_be_visible()
    settled(page)
    rows = audit_entries(page)
    expect(rows).to_have_count(50)
    expect(rows.first).to_contain_text(f'{person.handle} created token pst_…0059')
    expect(rows.first.locator('img.avatar')).to_have_count(1)  # the actor's, named once
    assert rows.first.inner_text().count(person.handle) == 1
    time = rows.first.locator('time')
    expect(time).to_have_attribute('title', re.compile(r'^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$'))
    # With JS, shown in the browser's time zone, named; the UTC value in the tooltip.
    zone = re.compile(' E[SD]T$' if javascript else ' UTC$')
    expect(time).to_have_text(zone)

    mark_document(page)
    page.get_by_role('link', name='Load more').click()
    if javascript:
        expect(rows).to_have_count(62)
        expect(page.get_by_role('link', name='Load more')).to_have_count(0)
        expect(rows.nth(50)).to_contain_text('created token pst_…0009')
        expect(rows.last).to_contain_text(f'{person.handle} signed up')
        expect(rows.nth(60).locator('time')).to_have_text(zone)
    else:
        expect(rows).to_have_count(12)
        expect(rows.first).to_contain_text('created token pst_…0009')
        expect(page.get_by_role('link', name='Back to the newest records')).to_be_visible()
    assert is_same_document(page) is javascript

    filter_box = page.get_by_label('Action type')
    filter_box.select_option('user.login')
    if not javascript:
        page.get_by_role('button', name='Filter').click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(f'{person.handle} logged in')
    expect(page).to_have_url(re.compile(r'/audit\?action_type=user\.login$'))
    expect(filter_box).to_have_value('user.login')
    assert is_same_document(page) is javascript
    expect(page.get_by_role('link', name='Export as CSV')).to_be_visible()


def test_load_more_by_keyboard_moves_focus_to_the_first_entry_it_added(new_page, person):
    page = new_page(javascript=True)
    person.sign_up(page)
    write_records(person, 120)  # with signup and login: 122 records, three pages of 50
    settings_link(page, 'Audit Log').click()
    rows = audit_entries(page)
    expect(rows).to_have_count(50)
    for shown, first_added in ((50, 'created token pst_…0069'), (100, 'created token pst_…0019')):
        settled(page)
        page.get_by_role('link', name='Load more').focus()
        page.keyboard.press('Enter')
        expect(rows).to_have_count(min(shown + 50, 122))
        expect(rows.nth(shown)).to_contain_text(first_added)
        expect(rows.nth(shown)).to_be_focused()
        # Focus stays there, with the ring every focused control has.
        settled(page)
        assert rows.nth(shown).evaluate(
            "entry => entry === document.activeElement && entry.matches(':focus-visible') && "
            "getComputedStyle(entry).outlineStyle === 'solid'")
    expect(page.get_by_role('link', name='Load more')).to_have_count(0)  # the last page
    assert page.evaluate('document.activeElement.tagName') == 'LI'


@pytest.mark.parametrize('zone', ['America/New_York', 'UTC'])
def test_times_show_the_moment_in_the_browsers_time_zone_and_name_it(new_page, person, zone):
    page = new_page(timezone_id=zone, locale='en-US')
    person.sign_up(page)
    write_records(person, 1)
    page.goto(f'/user/{person.handle}/settings/audit')
    time = audit_entries(page).first.locator('time')
    moment = datetime.datetime.fromisoformat(time.get_attribute('datetime'))
    expect(time).to_have_attribute('title', moment.strftime('%Y-%m-%d %H:%M:%S UTC'))
    local = moment.astimezone(zoneinfo.ZoneInfo(zone))
    # "Dec 3, 2026, 12:34 AM EST" (ICU may put a narrow no-break space before AM).
    expect(time).to_have_text(re.compile(
        rf'^{local:%b} {local.day}, {local.year}, {local.hour % 12 or 12}:{local:%M}'
        rf'\s{local:%p} {local.tzname()}$'))


def test_verify_a_cli_login_and_copy_its_code(page, javascript, person, live_server):
    person.sign_up(page)
    status, started = call(f'{live_server}/api/v0/login/token', method='POST')
    assert status == 201
    page.goto(started['url'])
    expect(page.get_by_role('heading', level=1, name='Verify login request')).to_be_visible()
    expect(page.get_by_text('127.0.0.1')).to_be_visible()
    expect(page.locator('#login-request')).to_contain_text(person.handle)
    settled(page)
    page.get_by_role('button', name='Verify').click()

    code_field = page.get_by_label('Verification code')
    expect(code_field).to_have_value(re.compile(r'^[0-9]{6}$'))
    expect(code_field).to_have_accessible_description(CODE_HINT)
    expect(page).to_have_url(re.compile(r'/login/token'))
    assert code_field.input_value() not in page.url
    code = code_field.input_value()
    copy = page.get_by_role('button', name='Copy')
    if javascript:
        page.context.grant_permissions(['clipboard-read', 'clipboard-write'],
                                       origin=live_server)
        copy.click()
        # (the page's flash region is a status too, empty here)
        expect(page.get_by_role('status').filter(has_text='Copied')).to_have_text('Copied')
        assert page.evaluate('navigator.clipboard.readText()') == code
    else:
        expect(copy).to_be_hidden()  # without JS the code is selected and copied by hand

    status, body = call(f'{live_server}/api/v0/login/token/{started["id"]}?code={code}')
    assert status == 200 and body['token'].startswith('pstt_')
    page.goto(started['url'])
    expect(page.get_by_role('heading', level=1, name='Login request not found')).to_be_visible()


def test_verify_asks_for_the_password_when_it_was_typed_long_ago_then_comes_back(
        page, javascript, person, live_server):
    person.sign_up(page)
    _, started = call(f'{live_server}/api/v0/login/token', method='POST')
    page.goto(started['url'])
    settled(page)
    age_the_login(person)  # while the page was open
    page.get_by_role('button', name='Verify').click()
    confirm_password(page, person)
    expect(page).to_have_url(started['url'])
    expect(page.get_by_role('heading', level=1, name='Verify login request')).to_be_visible()
    settled(page)
    page.get_by_role('button', name='Verify').click()
    code = page.get_by_label('Verification code')
    expect(code).to_have_value(re.compile(r'^[0-9]{6}$'))
    status, body = call(f'{live_server}/api/v0/login/token/{started["id"]}'
                        f'?code={code.input_value()}')
    assert status == 200 and body['token'].startswith('pstt_')


def test_decline_a_cli_login(page, person, live_server):
    person.sign_up(page)
    _, started = call(f'{live_server}/api/v0/login/token', method='POST')
    page.goto(started['url'])
    settled(page)
    page.get_by_role('button', name='Decline').click()
    expect(page.get_by_role('status').filter(has_text='Login request declined.')).to_be_visible()
    status, _ = call(f'{live_server}/api/v0/login/token/{started["id"]}?code=123456')
    assert status == 404


@pytest.mark.parametrize('color_scheme', ['light', 'dark'])
def test_audit_advanced_and_verify_pages_have_no_serious_accessibility_violations(
        new_page, axe, person, live_server, color_scheme):
    page = new_page(javascript=True, color_scheme=color_scheme)
    audit = axe(page)

    person.sign_up(page)
    write_records(person, 3)
    settings_link(page, 'Audit Log').click()
    expect(audit_entries(page)).to_have_count(5)
    audit_entries(page).first.get_by_text('Details', exact=True).click()
    expect(audit_entries(page).first.locator('dl')).to_be_visible()
    audit('audit log, details open')
    settings_link(page, 'Advanced').click()
    page.get_by_role('button', name='Reset authentication').click()
    expect(page.get_by_text('Reset authentication now?')).to_be_visible()
    audit('advanced, confirming')
    _, started = call(f'{live_server}/api/v0/login/token', method='POST')
    page.goto(started['url'])
    audit('verify login request')
    page.get_by_role('button', name='Verify').click()
    expect(page.get_by_label('Verification code')).to_be_visible()
    audit('verify login request, code')

    audit.assert_clean(f'{color_scheme} scheme')


def test_audit_log_fits_a_phone_screen(sized_page, javascript, person):
    page = sized_page(360, 740, phone=True)
    person.sign_up(page)
    write_every_kind(person)
    page.goto(f'/user/{person.handle}/settings/audit')
    expect(panel_heading(page, 'Audit Log')).to_be_visible()
    entries = audit_entries(page)
    expect(entries).to_have_count(len(EVERY_KIND) + 3)  # with signup, login, display name
    expect(entries.first).to_contain_text(f'{LONG_NAME} could not be sent an email about the '
                                          'rotated database password')
    open_every_details(page)

    assert page.evaluate('document.documentElement.scrollWidth') <= 360
    boxes = [entries.nth(i).bounding_box() for i in range(entries.count())]
    for part in ('Action type', 'Export as CSV', 'Export as JSON Lines'):
        boxes.append(page.get_by_label(part).bounding_box() if part == 'Action type'
                     else page.get_by_role('link', name=part).bounding_box())
    assert all(box['x'] >= 0 and box['x'] + box['width'] <= 360 for box in boxes), boxes
    # Stacked cards: each entry starts below the one before, none beside another.
    tops = [box['y'] for box in boxes[:entries.count()]]
    assert tops == sorted(tops) and len(set(tops)) == len(tops)
    assert page.evaluate('document.documentElement.scrollWidth') <= 360  # with details open


def test_audit_entry_reads_on_at_most_two_lines_on_a_desktop(sized_page, javascript, person):
    page = sized_page(1280, 800)
    person.sign_up(page)
    write_every_kind(person)
    page.goto(f'/user/{person.handle}/settings/audit')
    entries = audit_entries(page)
    expect(entries).to_have_count(len(EVERY_KIND) + 3)
    open_every_details(page)
    assert page.evaluate('document.documentElement.scrollWidth') <= 1280
    line = page.evaluate("parseFloat(getComputedStyle(document.querySelector("
                         "'.audit-sentence')).lineHeight)")
    for i in range(entries.count()):
        sentence = entries.nth(i).locator('p').first
        assert sentence.bounding_box()['height'] <= 2 * line + 1, sentence.inner_text()
    # The longest sentence and the reset's data: each value on one line, none a letter wide.
    reset = entries.filter(has_text='reset authentication')
    expect(reset).to_contain_text('logging out every session and revoking every token')
    assert reset.locator('p').first.bounding_box()['height'] <= 2 * line + 1
    values = page.locator('.audit-details dd')
    assert values.count() > 20
    for i in range(values.count()):
        box = values.nth(i).bounding_box()
        assert box['width'] > 60 and box['height'] <= line + 1, values.nth(i).inner_text()
