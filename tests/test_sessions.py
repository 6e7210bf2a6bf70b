"""Settings → Advanced → Sessions: the user's browser logins, and revoking the others."""
import pytest

import credentials
import database
import models
from credentials import device
from tests.helpers import HTMX, csrf_token, html, log_in

URL = '/user/alice/settings/advanced'
CHROME_LINUX = ('Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) '
                'Chrome/131.0.0.0 Safari/537.36')
FIREFOX_WINDOWS = ('Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 '
                   'Firefox/133.0')


def browser(app, login, user_agent, ip):
    """Another browser, with its own cookies, user agent and address, logged in as `login`."""
    other = app.test_client()
    other.environ_base.update(HTTP_USER_AGENT=user_agent, REMOTE_ADDR=ip)
    assert log_in(other, login).status_code == 302
    return other


def sessions_of(user):
    with database.db.connection_context():
        return list(credentials.Session.select().where(credentials.Session.user == user.id))


def session_rows(page):
    return page.find('section', id='sessions').find('tbody').find_all('tr')


def cells(row):
    return [cell.get_text(' ', strip=True) for cell in row.find_all(['th', 'td'])]


def other_session(user, user_agent):
    return next(s for s in sessions_of(user) if s.user_agent == user_agent)


def revoke(client, session_id, headers=None):
    return client.post(f'{URL}/sessions/{session_id}/revoke',
                       data={'csrf_token': csrf_token(client, URL)}, headers=headers or {})


def revokes(user):
    with database.db.connection_context():
        return list(models.AuditRecord.select().where(
            models.AuditRecord.identity == user.id,
            models.AuditRecord.action_type == 'user.session.revoke'))


@pytest.mark.parametrize('headers', [{}, HTMX], ids=['page', 'htmx'])
def test_sessions_lists_each_login_with_device_ip_and_times_and_marks_this_one(
        app, client, logged_in, headers):
    browser(app, 'alice', CHROME_LINUX, '198.51.100.7')
    response = client.get(URL, headers=headers)
    assert response.status_code == 200
    page = html(response)
    assert (page.find('header', id='topbar') is None) == bool(headers)
    section = page.find('section', id='sessions')
    assert section.find('h3').get_text() == 'Sessions'
    rows = session_rows(page)
    assert len(rows) == 2
    chrome = other_session(logged_in, CHROME_LINUX)
    chrome_row = section.find('tr', id=f'session-{chrome.id}')
    assert cells(chrome_row)[:2] == ['Chrome on Linux', '198.51.100.7']
    assert [t['datetime'] for t in chrome_row.find_all('time')] == [
        chrome.created_at.isoformat(timespec='seconds') + 'Z',
        chrome.last_seen_at.isoformat(timespec='seconds') + 'Z']
    button = chrome_row.find('button')
    assert button.get_text() == 'Revoke'
    form = button.find_parent('form')
    assert (form['method'], form['action']) == ('post', f'{URL}/sessions/{chrome.id}/revoke')
    assert form['hx-target'] == '#sessions'
    assert form.find('input', attrs={'name': 'csrf_token'}) is not None

    this = next(row for row in rows if row is not chrome_row)
    assert cells(this)[-1] == 'This session'
    assert this.find('button') is None and this.find('form') is None


def test_revoking_another_session_logs_that_browser_out(app, client, logged_in):
    other = browser(app, 'alice', CHROME_LINUX, '198.51.100.7')
    assert other.get(URL).status_code == 200
    chrome = other_session(logged_in, CHROME_LINUX)

    response = revoke(client, chrome.id)

    assert response.status_code == 303
    assert response.headers['Location'] == URL + '#sessions'
    (left,) = sessions_of(logged_in)
    assert left.id != chrome.id and left.user_agent != CHROME_LINUX
    page = html(client.get(URL))
    assert page.find(id='flash').get_text(strip=True) == (
        'Session revoked: Chrome on Linux, 198.51.100.7. That browser is logged out.')
    assert len(session_rows(page)) == 1
    assert other.get(URL).headers['Location'] == f'/login?next={URL}'
    assert [r.data for r in revokes(logged_in)] == [f'{{"session_id": "{chrome.id}"}}']


def test_revoking_with_htmx_swaps_the_list_and_says_so(app, client, logged_in):
    other = browser(app, 'alice', FIREFOX_WINDOWS, '203.0.113.9')
    firefox = other_session(logged_in, FIREFOX_WINDOWS)

    response = revoke(client, firefox.id, HTMX)

    assert response.status_code == 200
    fragment = html(response)
    assert fragment.find('h2') is None
    assert fragment.find('section', id='sessions').find('tr', id=f'session-{firefox.id}') is None
    assert len(session_rows(fragment)) == 1
    flash = fragment.find(id='flash')
    assert flash['hx-swap-oob'] == 'innerHTML'
    assert 'Firefox on Windows' in flash.get_text()
    assert other.get(URL, headers=HTMX).headers['HX-Redirect'].startswith('/login')


def test_another_users_session_cannot_be_revoked(app, client, logged_in, other_user):
    browser(app, 'bob', CHROME_LINUX, '198.51.100.8')
    bobs = sessions_of(other_user)[0]
    assert revoke(client, bobs.id).status_code == 404
    assert client.post(f'/user/bob/settings/advanced/sessions/{bobs.id}/revoke',
                       data={'csrf_token': csrf_token(client, URL)}).status_code == 404
    assert [s.id for s in sessions_of(other_user)] == [bobs.id]
    assert revokes(logged_in) == [] and revokes(other_user) == []


def test_this_session_and_unknown_ids_cannot_be_revoked_here(client, logged_in):
    (mine,) = sessions_of(logged_in)
    assert revoke(client, mine.id).status_code == 404
    assert revoke(client, 's_nosuchsession').status_code == 404
    assert client.get(URL).status_code == 200  # still logged in


def test_revoking_without_the_csrf_token_changes_nothing(app, client, logged_in):
    browser(app, 'alice', CHROME_LINUX, '198.51.100.7')
    chrome = other_session(logged_in, CHROME_LINUX)
    assert client.post(f'{URL}/sessions/{chrome.id}/revoke').status_code == 400
    assert len(sessions_of(logged_in)) == 2


@pytest.mark.parametrize('user_agent, name', [
    (CHROME_LINUX, 'Chrome on Linux'),
    (FIREFOX_WINDOWS, 'Firefox on Windows'),
    ('Mozilla/5.0 (Macintosh; Intel Mac OS X 14_7) AppleWebKit/605.1.15 (KHTML, like Gecko) '
     'Version/18.1 Safari/605.1.15', 'Safari on macOS'),
    ('Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, '
     'like Gecko) Version/18.1 Mobile/15E148 Safari/604.1', 'Safari on iOS'),
    ('Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) '
     'Chrome/131.0.0.0 Mobile Safari/537.36', 'Chrome on Android'),
    ('Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) '
     'Chrome/131.0.0.0 Safari/537.36 Edg/131.0.2903.70', 'Edge on Windows'),
    ('Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) '
     'Chrome/131.0.0.0 Safari/537.36 OPR/115.0.0.0', 'Opera on Linux'),
    ('Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) '
     'Chrome/131.0.0.0 Safari/537.36', 'Chrome on ChromeOS'),
    ('Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) '
     'HeadlessChrome/131.0.0.0 Safari/537.36', 'Headless Chrome on Linux'),
    ('curl/8.5.0', 'curl'),
    ('Mozilla/5.0 (X11; Linux x86_64)', 'A browser on Linux'),
    ('', 'Unknown device'),
    (None, 'Unknown device'),
])
def test_the_device_is_named_from_the_user_agent(user_agent, name):
    assert device(user_agent) == name
