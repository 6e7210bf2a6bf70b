"""Settings → Profile: the display name (set, cleared, refused)."""
import json
from unicodedata import unidata_version

import pytest

import database
import models
from tests.helpers import HTMX, csrf_token, html

URL = '/user/alice/settings/profile'


def save_name(client, value, headers=None):
    return client.post(URL, data={'display_name': value, 'csrf_token': csrf_token(client, URL)},
                       headers=headers or {})


def stored_name():
    with database.db.connection_context():
        return models.User.get(models.User.handle == 'alice').display_name


def test_profile_shows_email_read_only_and_the_name_field(client, logged_in):
    panel = html(client.get(URL)).find(id='panel')
    assert 'alice@example.com' in panel.find('dl').get_text()
    assert panel.find('input', attrs={'value': 'alice@example.com'}) is None
    assert panel.find('label', attrs={'for': 'display_name'}).get_text(strip=True) == 'Display Name'
    assert panel.find('form', id='display-name-form').find('button').get_text(strip=True) == 'Save'


def test_saving_the_name_without_javascript_redirects_and_says_so(client, logged_in):
    response = save_name(client, '  Alice Liddell  ')
    assert response.status_code == 303 and response.headers['Location'] == URL
    assert stored_name() == 'Alice Liddell'
    page = html(client.get(URL))
    assert page.find(id='flash').get_text(strip=True) == 'Display name saved.'
    assert page.find(class_='account-name').get_text(strip=True) == 'Alice Liddell'
    assert page.find('input', id='display_name')['value'] == 'Alice Liddell'


def test_saving_the_name_with_htmx_swaps_the_form_and_the_header(client, logged_in):
    response = save_name(client, 'Alice Liddell', HTMX)
    assert response.status_code == 200
    fragment = html(response)
    form = fragment.find('form', id='display-name-form')
    assert form.find('input', id='display_name')['value'] == 'Alice Liddell'
    flash = fragment.find(id='flash')
    assert flash['hx-swap-oob'] == 'innerHTML'
    assert flash.get_text(strip=True) == 'Display name saved.'
    header = fragment.find('header', id='topbar')
    assert header['hx-swap-oob'] == 'true'
    assert header.find(class_='account-name').get_text(strip=True) == 'Alice Liddell'
    assert stored_name() == 'Alice Liddell'


def test_display_name_is_escaped_everywhere(client, logged_in):
    save_name(client, '<script>alert(1)</script>')
    response = client.get(URL)
    body = response.get_data(as_text=True)
    assert '<script>alert(1)</script>' not in body
    assert '&lt;script&gt;alert(1)&lt;/script&gt;' in body
    assert html(response).find(class_='account-name').get_text() == '<script>alert(1)</script>'


@pytest.mark.parametrize('value,message', [
    ('x' * 101, 'Use at most 100 characters (this is 101).'),
    ('Alice\nLiddell', 'Remove line breaks and other control characters (U+000A).'),
    ('Alice\x00', 'Remove line breaks and other control characters (U+0000).'),
    ('Alice\x7f', 'Remove line breaks and other control characters (U+007F).'),
    ('Alice\u2028Liddell', 'Remove line breaks and other control characters (U+2028).'),
    ('Ali\u202ece', 'Remove invisible formatting characters (U+202E).'),
    ('Ali\u200bce', 'Remove invisible formatting characters (U+200B).'),
    ('Alice\U000E0041', 'Remove invisible formatting characters (U+E0041).'),
    ('Alice\ue000', 'Remove U+E000: private-use characters look different on every device.'),
    ('Alice\u0378', f'Remove U+0378: it is not a character in Unicode {unidata_version}.'),
    ('Alice\ufffe', f'Remove U+FFFE: it is not a character in Unicode {unidata_version}.'),
])
@pytest.mark.parametrize('headers', [None, HTMX], ids=['page', 'htmx'])
def test_a_bad_name_is_refused_in_place_and_changes_nothing(client, logged_in, value, message,
                                                            headers):
    response = save_name(client, value, headers)
    assert response.status_code == 422
    form = html(response).find('form', id='display-name-form')
    assert form.find(id='display_name-error').get_text(strip=True) == message
    field = form.find('input', id='display_name')
    assert field['aria-invalid'] == 'true'
    assert 'display_name-error' in field['aria-describedby']
    assert stored_name() is None
    if headers:
        assert html(response).find('header') is None
    else:
        assert html(response).find(class_='account-name').get_text(strip=True) == 'alice'


@pytest.mark.parametrize('name', [
    'Zoë Ørsted', '李小龙', 'محمد',
    'می\u200cخواهم',  # a zero-width non-joiner is spelling in Persian
    '\U0001F469\u200d\U0001F4BB Ada',  # woman + zero-width joiner + laptop: one emoji
    '\u2764\ufe0f', '\U0001F44B\U0001F3FD',  # a variation selector, a skin tone
    '\U0001F3F4\U000E0067\U000E0062\U000E0073\U000E0063\U000E0074\U000E007F',  # Scotland
])
def test_names_in_any_script_and_with_emoji_are_accepted(client, logged_in, name):
    assert save_name(client, name).status_code == 303
    assert stored_name() == name


def test_a_hundred_character_name_is_accepted(client, logged_in):
    assert save_name(client, 'x' * 100).status_code == 303
    assert stored_name() == 'x' * 100


def test_a_name_change_is_audited_once_with_old_and_new(client, logged_in):
    save_name(client, 'Alice')
    save_name(client, 'Alice')
    with database.db.connection_context():
        records = list(models.AuditRecord.select().where(
            models.AuditRecord.action_type == 'user.update'))
        user = models.User.get(models.User.handle == 'alice')
    assert len(records) == 1
    assert json.loads(records[0].data) == {'display_name': {'old': None, 'new': 'Alice'}}
    assert records[0].actor_ip == '127.0.0.1' and records[0].target_id == user.id
    assert user.version_id == 2 and user.updated_at is not None


def test_the_name_field_may_be_left_empty_and_the_hint_says_so(client, logged_in):
    form = html(client.get(URL)).find('form', id='display-name-form')
    field = form.find('input', id='display_name')
    assert not field.has_attr('required')
    hint = form.find(id=field['aria-describedby'].split()[0]).get_text(' ', strip=True)
    assert 'leave it empty to show your handle' in hint


def shown_names(page):
    """Where the console names the user: the top bar, and the account menu's heading."""
    topbar = page.find('header', id='topbar')
    return (topbar.find(class_='account-name').get_text(strip=True),
            topbar.find('summary', attrs={'aria-label': 'Account menu'}).parent
            .find(class_='menu-heading').find('strong').get_text(strip=True))


@pytest.mark.parametrize('value', ['', '   ', '\t \u3000'], ids=['empty', 'spaces', 'blank'])
def test_clearing_the_name_without_javascript_shows_the_handle_again(client, logged_in, value):
    save_name(client, 'Alice Liddell')
    assert shown_names(html(client.get(URL))) == ('Alice Liddell', 'Alice Liddell')
    response = save_name(client, value)
    assert response.status_code == 303 and response.headers['Location'] == URL
    assert stored_name() is None
    page = html(client.get(URL))
    assert page.find(id='flash').get_text(strip=True) == \
        'Display name cleared: the console shows your handle.'
    assert shown_names(page) == ('alice', 'alice')
    assert page.find('input', id='display_name')['value'] == ''


def test_clearing_the_name_with_htmx_swaps_the_header_to_the_handle(client, logged_in):
    save_name(client, 'Alice Liddell')
    response = save_name(client, '  ', HTMX)
    assert response.status_code == 200
    fragment = html(response)
    assert fragment.find('form', id='display-name-form').find(
        'input', id='display_name')['value'] == ''
    assert fragment.find('header', id='topbar')['hx-swap-oob'] == 'true'
    assert shown_names(fragment) == ('alice', 'alice')
    assert fragment.find(id='flash').get_text(strip=True) == \
        'Display name cleared: the console shows your handle.'
    assert stored_name() is None


def test_clearing_the_name_is_audited_as_cleared_once(client, logged_in):
    save_name(client, 'Alice')
    save_name(client, '')
    save_name(client, ' ')  # already cleared: nothing changes, nothing is written
    with database.db.connection_context():
        records = list(models.AuditRecord.select().where(
            models.AuditRecord.action_type == 'user.update').order_by(
                models.AuditRecord.created_at))
    assert [json.loads(record.data) for record in records] == [
        {'display_name': {'old': None, 'new': 'Alice'}},
        {'display_name': {'old': 'Alice', 'new': None}}]
    log = html(client.get('/user/alice/settings/audit')).find(id='panel').get_text(' ', strip=True)
    assert 'cleared their display name' in log
    assert 'changed their display name to “Alice”' in log
