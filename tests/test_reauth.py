"""Re-authentication before dangerous actions on Advanced: a stale session is asked for the
password, a wrong one changes nothing, the right one goes back to the action."""

import pytest

import credentials
import database
import models
from tests.helpers import HTMX, PASSWORD, csrf_token, html, make_stale, reauth_next, reauthenticate

URL = '/user/alice/settings/advanced'


def authenticated_at(user):
    with database.db.connection_context():
        return [s.authenticated_at for s in
                credentials.Session.select().where(credentials.Session.user == user.id)]


def state(user):
    with database.db.connection_context():
        alice = models.User.get_or_none(models.User.id == user.id)
        return (alice and alice.handle,
                credentials.Session.select().where(credentials.Session.user == user.id).count())


# (method, path, form): every dangerous action on Advanced, and a form that would do it.
ACTIONS = [
    ('GET', URL + '/delete', None),
    ('POST', URL + '/delete', {'confirm': 'alice'}),
    ('POST', URL + '/handle', {'handle': 'carol', 'previewed': '1'}),
    ('POST', URL + '/handle', {'handle': 'carol'}),  # the preview step asks too
    ('GET', URL + '/reset-authentication', None),
    ('POST', URL + '/reset-authentication', {}),
]
IDS = ['delete-step', 'delete', 'handle', 'handle-preview-step', 'reset-step', 'reset']


def attempt(client, method, path, form, headers):
    if method == 'GET':
        return client.get(path, headers=headers)
    token = csrf_token(client, URL)
    return client.post(path, data={**form, 'csrf_token': token},
                       headers={'Referer': 'http://localhost' + URL, **headers})


@pytest.mark.parametrize('method, path, form', ACTIONS, ids=IDS)
def test_a_stale_session_is_asked_for_the_password_first(client, logged_in, method, path,
                                                         form):
    make_stale(logged_in)
    response = attempt(client, method, path, form, {})
    assert response.status_code == 303
    assert reauth_next(response.headers['Location']) == (path if method == 'GET' else URL)
    assert state(logged_in) == ('alice', 1)  # nothing done


@pytest.mark.parametrize('method, path, form', ACTIONS, ids=IDS)
def test_a_stale_htmx_request_is_sent_to_the_password_page_as_a_whole_page(
        client, logged_in, method, path, form):
    make_stale(logged_in)
    headers = {**HTMX, 'HX-Current-URL': 'http://localhost' + URL}
    response = attempt(client, method, path, form, headers)
    assert response.status_code == 204
    assert reauth_next(response.headers['HX-Redirect']) == (path if method == 'GET' else URL)
    assert state(logged_in) == ('alice', 1)


def test_the_password_page_asks_for_the_password(client, logged_in):
    make_stale(logged_in)
    location = client.get(URL + '/delete').headers['Location']
    page = html(client.get(location))
    assert page.find('h1').get_text() == 'Confirm your password'
    form = page.find('form', action='/reauth')
    assert form.find('input', attrs={'name': 'next'})['value'] == URL + '/delete'
    assert form.find('label', attrs={'for': 'password'}).get_text() == 'Password'
    # A form is not replayed after the password, so the page says to send it again.
    assert page.find(id='reauth-then').get_text() == (
        'Then you go back to the page you were on. A form you were sending was not sent: '
        'send it again there.')


@pytest.mark.parametrize('method, path, form', ACTIONS, ids=IDS)
def test_a_wrong_password_changes_nothing(client, logged_in, method, path, form):
    make_stale(logged_in)
    location = attempt(client, method, path, form, {}).headers['Location']
    before = authenticated_at(logged_in)

    response = reauthenticate(client, location, 'not the password')

    assert response.status_code == 401
    assert 'That password is not right.' in html(response).find(
        id='password-error').get_text()
    assert authenticated_at(logged_in) == before
    assert state(logged_in) == ('alice', 1)
    assert attempt(client, method, path, form, {}).status_code == 303  # still asked


def test_the_right_password_goes_back_to_the_delete_step_and_deleting_works(client,
                                                                            logged_in):
    make_stale(logged_in)
    location = client.get(URL + '/delete').headers['Location']

    response = reauthenticate(client, location, PASSWORD)

    assert response.status_code == 303
    assert response.headers['Location'] == URL + '/delete'
    step = html(client.get(response.headers['Location']))
    assert step.find('input', id='delete-confirm') is not None
    deleted = client.post(URL + '/delete', data={'csrf_token': csrf_token(client, URL),
                                                 'confirm': 'alice'})
    assert deleted.headers['Location'] == '/goodbye'
    assert state(logged_in) == (None, 0)


def test_the_right_password_goes_back_to_the_page_and_the_handle_can_be_changed(
        client, logged_in):
    make_stale(logged_in)
    response = attempt(client, 'POST', URL + '/handle', {'handle': 'carol'}, {})
    back = reauthenticate(client, response.headers['Location'], PASSWORD)
    assert back.status_code == 303 and back.headers['Location'] == URL
    preview = attempt(client, 'POST', URL + '/handle', {'handle': 'carol'}, {})
    assert preview.status_code == 200
    saved = attempt(client, 'POST', URL + '/handle', {'handle': 'carol', 'previewed': '1'}, {})
    assert saved.headers['Location'] == '/user/carol/settings/advanced'
    assert state(logged_in) == ('carol', 1)


def test_the_right_password_goes_back_to_reset_authentication(client, logged_in):
    make_stale(logged_in)
    location = client.get(URL + '/reset-authentication').headers['Location']
    back = reauthenticate(client, location, PASSWORD)
    assert back.headers['Location'] == URL + '/reset-authentication'
    assert 'Reset authentication now?' in html(client.get(back.headers['Location'])).get_text()
    reset = attempt(client, 'POST', URL + '/reset-authentication', {}, {})
    assert reset.headers['Location'] == '/login'
    assert state(logged_in) == ('alice', 0)


@pytest.mark.parametrize('target', ['https://evil.example/steal', '//evil.example/steal',
                                    '/\\evil.example', 'javascript:alert(1)',
                                    '/\t/evil.example', '/\r\n/evil.example'])
def test_a_next_address_on_another_host_is_ignored(client, logged_in, target):
    make_stale(logged_in)
    response = client.post('/reauth', data={'password': PASSWORD, 'next': target,
                                            'csrf_token': csrf_token(client, '/reauth')})
    assert response.status_code == 303
    assert response.headers['Location'] == '/'
    page = html(client.get('/reauth', query_string={'next': target}))
    assert page.find('a', string='Cancel')['href'] == '/'
    assert page.find('input', attrs={'name': 'next'})['value'] == '/'


def test_a_stale_request_from_another_host_comes_back_to_this_site_only(client, logged_in):
    make_stale(logged_in)
    response = attempt(client, 'POST', URL + '/delete', {'confirm': 'alice'},
                       {'Referer': 'https://evil.example/'})
    assert reauth_next(response.headers['Location']) == '/'


def test_a_fresh_login_needs_no_password_again(client, logged_in):
    assert client.get(URL + '/delete').status_code == 200
    assert client.get(URL + '/reset-authentication').status_code == 200
