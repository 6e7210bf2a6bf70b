"""Settings → Advanced: Reset authentication and its confirmation step, with and without htmx."""
import credentials
import database
import models
from tests.conftest import SESSION_COOKIE as COOKIE
from tests.helpers import HTMX, csrf_token, html, log_in

URL = '/user/alice/settings/advanced'
CONFIRM = URL + '/reset-authentication'


def counts(user):
    with database.db.connection_context():
        return {model.__name__: model.select().where(model.user == user.id).count()
                for model in (credentials.Session, credentials.Token, credentials.TemporaryToken,
                              credentials.LoginRequest)}


def resets(user):
    with database.db.connection_context():
        return (models.AuditRecord.select()
                .where((models.AuditRecord.identity == user.id)
                       & (models.AuditRecord.action_type == 'user.authentication.reset'))
                .count())


def every_way_in(user):
    """A second browser's session, two tokens, a temporary token and a confirmed CLI login."""
    with database.db.connection_context():
        alice = models.User.get_by_id(user.id)
        credentials.Session.sign_in(alice, '198.51.100.2', 'Other browser')
        secrets = [credentials.Token.issue(alice)[1] for _ in range(2)]
        request = credentials.LoginRequest.start('198.51.100.3')
        request.exchange(request.confirm(alice), '198.51.100.3')
        temporary = credentials.LoginRequest.start('198.51.100.3')
        code = temporary.confirm(alice)
        secrets.append(temporary.exchange(code))
        credentials.LoginRequest.start('198.51.100.4').confirm(alice)  # confirmed, not exchanged
    return secrets


def test_advanced_page_is_a_full_page_normally_and_the_panel_for_htmx(client, logged_in):
    page = html(client.get(URL))
    assert page.title.get_text() == 'Advanced · Penstock'
    nav = page.find('nav', attrs={'aria-label': 'Settings'})
    assert nav.find(attrs={'aria-current': 'page'}).get_text(strip=True) == 'Advanced'
    section = page.find('section', id='reset-authentication')
    assert section.find('h4').get_text() == 'Reset authentication'
    assert 'temporary and user tokens' in section.get_text()
    form = section.find('button', string='Reset authentication').find_parent('form')
    assert form['method'] == 'get' and form['action'] == CONFIRM  # a step, not the reset

    response = client.get(URL, headers=HTMX)
    assert 'HX-Request' in response.vary
    fragment = html(response)
    assert fragment.find('header') is None
    assert fragment.find('h2', id='panel-heading').get_text() == 'Advanced'
    assert fragment.find('section', id='reset-authentication') is not None


def test_reset_and_delete_stand_apart_in_the_danger_zone(client, logged_in):
    page = html(client.get(URL))
    zone = page.find('h3', string='Danger zone').find_parent('section')
    assert zone['aria-labelledby'] == zone.h3['id']
    sections = [s['id'] for s in zone.find_all('section')]
    assert sections == ['reset-authentication', 'delete-account']
    assert page.find('section', id='sessions') not in zone.find_all('section')
    for name in ('Reset authentication', 'Delete Personal Account'):
        button = zone.find('button', string=name)
        assert button['class'] == ['danger-outline']  # outlined; the confirmation's is solid
        # Without JavaScript the step's address reads /…?step=confirm, not a bare "…?".
        assert (button['name'], button['value']) == ('step', 'confirm')


def test_confirmation_without_javascript_is_the_advanced_page_asking_first(client, logged_in):
    response = client.get(CONFIRM)
    assert response.status_code == 200
    page = html(response)
    assert page.find('header', id='topbar') is not None
    section = page.find('section', id='reset-authentication')
    assert 'Reset authentication now?' in section.get_text()
    form = section.find('form', method='post')
    assert form['action'] == CONFIRM
    assert form.find('input', attrs={'name': 'csrf_token'}) is not None
    assert form.find('button').get_text() == 'Reset authentication'
    assert form.find('button')['class'] == ['danger']
    cancel = section.find('a', string='Cancel')
    assert cancel['href'] == URL and cancel['class'] == ['button', 'secondary']
    assert counts(logged_in)['Session'] == 1  # asking changed nothing


def test_confirmation_with_htmx_swaps_the_section_and_cancel_swaps_it_back(client, logged_in):
    fragment = html(client.get(CONFIRM, headers=HTMX))
    section = fragment.find('section', id='reset-authentication')
    assert fragment.find('h2') is None and section is not None
    assert section.find(attrs={'autofocus': True})['id'] == 'reset-authentication-question'
    assert section.find('form', method='post')['hx-post'] == CONFIRM
    cancel = section.find('a', string='Cancel')
    assert cancel['hx-target'] == '#reset-authentication'

    back = client.get(cancel['hx-get'], headers={**HTMX, 'HX-Target': 'reset-authentication'})
    assert 'HX-Target' in back.vary
    section = html(back).find('section', id='reset-authentication')
    assert html(back).find('h2') is None
    button = section.find('button', string='Reset authentication')
    assert button.has_attr('autofocus') and button.find_parent('form')['method'] == 'get'


def test_reset_authentication_ends_every_way_in_and_logs_this_browser_out(
        app, client, logged_in):
    secrets = every_way_in(logged_in)
    old_cookie = client.get_cookie(COOKIE).value
    other_browser = app.test_client()
    log_in(other_browser, 'alice')
    assert other_browser.get(URL).status_code == 200
    assert counts(logged_in) == {'Session': 3, 'Token': 2, 'TemporaryToken': 2,
                                 'LoginRequest': 3}

    response = client.post(CONFIRM, data={'csrf_token': csrf_token(client, CONFIRM)})

    assert response.status_code == 303
    assert response.headers['Location'] == '/login'
    assert counts(logged_in) == {'Session': 0, 'Token': 0, 'TemporaryToken': 0,
                                 'LoginRequest': 0}
    assert resets(logged_in) == 1
    login_page = html(client.get('/login'))
    assert 'Authentication was reset' in login_page.find(id='flash').get_text()
    assert client.get(URL).headers['Location'] == f'/login?next={URL}'
    client.set_cookie(COOKIE, old_cookie)  # the old cookie itself is refused
    assert client.get(URL).headers['Location'] == f'/login?next={URL}'
    assert other_browser.get(URL).headers['Location'] == f'/login?next={URL}'
    for secret in secrets:
        answer = client.get('/api/v0/actor', headers={'Authorization': f'Bearer {secret}'})
        assert answer.status_code == 401
        assert answer.get_json()['status'] == 401


def test_reset_authentication_with_htmx_redirects_the_browser_to_login(client, logged_in):
    token = csrf_token(client, URL)
    response = client.post(CONFIRM, headers={**HTMX, 'X-CSRFToken': token})
    assert response.status_code == 204
    assert response.headers['HX-Redirect'] == '/login'
    assert counts(logged_in)['Session'] == 0 and resets(logged_in) == 1
    assert 'Authentication was reset' in html(client.get('/login')).find(id='flash').get_text()


def test_both_slots_are_free_again_after_a_reset(client, logged_in):
    every_way_in(logged_in)
    client.post(CONFIRM, data={'csrf_token': csrf_token(client, CONFIRM)})
    with database.db.connection_context():
        alice = models.User.get_by_id(logged_in.id)
        assert len({credentials.Token.issue(alice)[0].slot for _ in range(2)}) == 2


def test_reset_without_the_csrf_token_changes_nothing(client, logged_in):
    every_way_in(logged_in)
    response = client.post(CONFIRM)
    assert response.status_code == 400
    assert counts(logged_in)['Token'] == 2 and counts(logged_in)['Session'] == 2
    assert resets(logged_in) == 0


def test_another_users_advanced_page_is_404_and_their_sessions_are_untouched(
        app, client, logged_in, other_user):
    bob_browser = app.test_client()
    log_in(bob_browser, 'bob')
    token = csrf_token(client, URL)
    assert client.get('/user/bob/settings/advanced').status_code == 404
    response = client.post('/user/bob/settings/advanced/reset-authentication',
                           data={'csrf_token': token})
    assert response.status_code == 404
    assert counts(other_user)['Session'] == 1 and counts(logged_in)['Session'] == 1
    assert resets(other_user) == resets(logged_in) == 0


def test_reset_needs_login(client, user):
    response = client.get(CONFIRM)
    assert response.status_code == 302
    assert response.headers['Location'] == f'/login?next={CONFIRM}'
