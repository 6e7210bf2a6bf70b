"""Settings → Notifications: the email switches."""
import json

import pytest

import database
import models
from tests.helpers import HTMX, csrf_token, html

URL = '/user/alice/settings/notifications'
SWITCHES = {'community_updates': 'Community Updates', 'product_updates': 'Product Updates',
            'tips_and_tricks': 'Tips & Tricks'}


def save(client, on, headers=None, extra=None):
    data = {name: 'on' for name in on}
    data.update(extra or {})
    data['csrf_token'] = csrf_token(client, URL)
    return client.post(URL, data=data, headers=headers or {})


def stored():
    with database.db.connection_context():
        prefs = models.Preferences.get()
    return {name for name in SWITCHES if getattr(prefs, name)}


def switches(response):
    form = html(response).find('form', id='notifications-form')
    return {box['id']: box for box in form.find_all('input', attrs={'role': 'switch'})}


def test_the_four_switches_with_their_labels(client, logged_in):
    response = client.get(URL)
    boxes = switches(response)
    page = html(response)
    labels = [page.find('label', attrs={'for': i}).get_text(strip=True) for i in boxes]
    assert labels == ['Community Updates', 'Product Updates', 'Tips & Tricks', 'System']
    system = boxes['system']
    assert system.has_attr('checked') and system.has_attr('disabled')
    description = page.find(id='system-description').get_text()
    assert 'System notifications cannot be disabled' in description


def test_without_javascript_a_save_button_submits_the_form(client, logged_in):
    form = html(client.get(URL)).find('form', id='notifications-form')
    assert form['method'] == 'post' and form['action'] == URL
    assert form.find('noscript').find('button').get_text(strip=True) == 'Save'
    assert form['hx-trigger'] == 'change'


@pytest.mark.parametrize('name', list(SWITCHES))
def test_each_switch_persists(client, logged_in, name):
    response = save(client, [name])
    assert response.status_code == 303 and response.headers['Location'] == URL
    assert stored() == {name}
    page = client.get(URL)
    assert {i for i, box in switches(page).items() if box.has_attr('checked')} == {name, 'system'}
    assert html(page).find(id='flash').get_text(strip=True) == 'Notification preferences saved.'
    save(client, [])
    assert stored() == set()


def test_htmx_save_answers_with_the_status_out_of_band(client, logged_in):
    response = save(client, ['community_updates', 'tips_and_tricks'], HTMX)
    assert response.status_code == 200
    flash = html(response).find(id='flash')
    assert flash['hx-swap-oob'] == 'innerHTML'
    assert flash.get_text(strip=True) == 'Notification preferences saved.'
    assert stored() == {'community_updates', 'tips_and_tricks'}


def test_system_cannot_be_turned_off_by_a_forged_post(client, logged_in):
    save(client, ['product_updates'], extra={'system': 'off', 'system_notifications': ''})
    assert switches(client.get(URL))['system'].has_attr('checked')
    assert not hasattr(models.Preferences, 'system')


def test_a_change_is_audited_with_the_api_field_names(client, logged_in):
    save(client, ['community_updates', 'product_updates'])
    save(client, ['community_updates', 'product_updates'])
    with database.db.connection_context():
        records = list(models.AuditRecord.select().where(
            models.AuditRecord.action_type == 'user.preferences.update'))
    assert len(records) == 1
    assert json.loads(records[0].data) == {'communication_community_updates': 'enabled'}
