"""Settings → Tokens: the page, creating a token (secret shown once), the limit, the options."""
import re

import pytest

import credentials
import database
import models
from tests.conftest import SESSION_COOKIE, database_dump
from tests.helpers import (
    HTMX,
    PASSWORD,
    csrf_token,
    html,
    log_in,
    make_stale,
    reauth_next,
    reauthenticate,
    state_changing_routes,
)

URL = '/user/alice/settings/tokens'
LIMIT_REFUSAL = ('You already have 2 tokens, the most you can have at a time. '
                 'Delete one to create another.')
WARNING = 'Make a secure note of the token as you will not be able to retrieve it again.'


def create(client, headers=None):
    return client.post(URL, data={'csrf_token': csrf_token(client, URL)}, headers=headers or {})


def new_secret(client):
    """Create a token with the form, as a person without JavaScript would; returns the secret."""
    response = create(client)
    assert response.status_code == 200
    return html(response).find('input', id='token-secret-plain')['value']


def tokens():
    with database.db.connection_context():
        Token = credentials.Token
        return list(Token.select().order_by(Token.created_at, Token.id))


def audit_count(action_type):
    with database.db.connection_context():
        return (models.AuditRecord.select()
                .where(models.AuditRecord.action_type == action_type).count())


def flash_text(page):
    return page.find(id='flash').get_text(' ', strip=True)


def current_menu_entry(page):
    nav = page.find('nav', attrs={'aria-label': 'Settings'})
    return nav.find(attrs={'aria-current': 'page'}).get_text(strip=True)


def row_of(page, token):
    return page.find('tr', id=f'token-{token.id}')


def post_form(client, page, action_url, headers=None):
    """Submit the form on `page` whose action is `action_url`, with its own CSRF field."""
    form = page.find('form', action=action_url)
    assert form is not None, f'no form posting to {action_url}'
    data = {field['name']: field['value'] for field in form.find_all('input', type='hidden')}
    return client.post(action_url, data=data, headers=headers or {})


def test_tokens_page_is_a_full_page_with_the_intro_and_an_enabled_new_token(client, logged_in):
    response = client.get(URL)
    assert response.status_code == 200
    assert 'HX-Request' in response.vary
    assert response.headers['Cache-Control'] == 'no-store'
    page = html(response)
    assert page.title.get_text() == 'Tokens · Penstock'
    assert page.find('header', id='topbar') is not None
    panel = page.find(id='panel')
    assert panel.find('h2').get_text(strip=True) == 'Tokens'
    assert 'You can have up to 2 tokens at a time.' in panel.get_text(' ', strip=True)
    button = panel.find('button', id='new-token-button')
    assert button.get_text(strip=True) == 'New Token'
    assert not button.has_attr('disabled') and not button.has_attr('aria-describedby')
    assert 'You have no tokens yet.' in panel.find(id='token-list').get_text()
    assert current_menu_entry(page) == 'Tokens'


def test_tokens_page_is_only_the_panel_for_htmx(client, logged_in):
    response = client.get(URL, headers=HTMX)
    assert response.status_code == 200
    assert 'HX-Request' in response.vary
    fragment = html(response)
    assert fragment.find('html') is None and fragment.find('header') is None
    assert fragment.find('h2', id='panel-heading').get_text(strip=True) == 'Tokens'
    assert fragment.find('form', id='new-token') is not None
    assert fragment.find('nav', id='settings-nav')['hx-swap-oob'] == 'true'


def test_tokens_page_needs_login(client, user):
    response = client.get(URL)
    assert response.status_code == 302
    assert response.headers['Location'] == f'/login?next={URL}'
    response = client.get(URL, headers={**HTMX, 'HX-Current-URL': f'http://localhost{URL}'})
    assert response.status_code == 401
    assert response.headers['HX-Redirect'] == f'/login?next={URL}'


def test_another_users_tokens_page_is_not_found(client, logged_in, other_user):
    assert client.get('/user/bob/settings/tokens').status_code == 404


def test_new_token_without_javascript_shows_the_secret_once_in_a_selectable_field(
        client, logged_in):
    response = create(client)
    assert response.status_code == 200, 'rendered directly: the secret never goes in a URL'
    assert 'Location' not in response.headers
    assert response.headers['Cache-Control'] == 'no-store'
    page = html(response)
    assert page.find('header', id='topbar') is not None
    assert current_menu_entry(page) == 'Tokens'
    shown = page.find(id='token-created')
    assert shown.find(attrs={'hx-history': 'false'}) is not None
    assert shown.find(id='token-secret-warning').get_text(strip=True) == WARNING
    plain = shown.find('noscript').find('input', id='token-secret-plain')
    assert plain['type'] == 'text' and plain.has_attr('readonly')
    assert shown.find('label', attrs={'for': 'token-secret-plain'}) is not None
    secret = plain['value']
    assert credentials.Token.prefix_of(secret) == 'pst_'

    with database.db.connection_context():
        credential = credentials.bearer(secret)
        assert credential is not None and credential.user.handle == 'alice'
    [token] = tokens()
    assert token.last4 == secret[-4:] and token.token_hash == models.sha256(secret)
    assert secret not in database_dump()
    assert audit_count('token.create') == 1
    assert row_of(page, token).find('code').get_text() == f'pst_…{secret[-4:]}'


def test_new_token_secret_is_masked_with_reveal_and_copy_controls(client, logged_in):
    page = html(create(client))
    field = page.find('input', id='token-secret')
    assert field['type'] == 'password' and field.has_attr('readonly')
    assert field['aria-describedby'] == 'token-secret-warning'
    assert page.find('label', attrs={'for': 'token-secret'}).get_text(strip=True)
    reveal = page.find('button', attrs={'data-reveal': 'token-secret'})
    assert reveal['aria-label'] == 'Reveal token' and reveal['aria-pressed'] == 'false'
    assert reveal['type'] == 'button' and reveal.find('svg')['aria-hidden'] == 'true'
    copy = page.find('button', attrs={'data-copy': 'token-secret'})
    assert copy['aria-label'] == 'Copy token' and copy['type'] == 'button'
    assert page.find(id='token-secret-copied')['role'] == 'status'
    assert field['value'] == page.find('input', id='token-secret-plain')['value']


def test_new_token_for_htmx_swaps_in_the_secret_and_updates_button_and_list(client, logged_in):
    response = create(client, HTMX)
    assert response.status_code == 200
    assert response.headers['Cache-Control'] == 'no-store'
    fragment = html(response)
    assert fragment.find('html') is None
    shown = fragment.find('div', id='token-created')
    assert not shown.has_attr('hx-swap-oob'), 'the main swap target of the New Token form'
    assert shown.find(attrs={'hx-history': 'false'}) is not None
    secret = shown.find('input', id='token-secret')['value']
    assert fragment.find('form', id='new-token')['hx-swap-oob'] == 'true'
    token_list = fragment.find('section', id='token-list')
    assert token_list['hx-swap-oob'] == 'true'
    [token] = tokens()
    assert row_of(token_list, token).find('code').get_text() == f'pst_…{secret[-4:]}'
    with database.db.connection_context():
        assert credentials.bearer(secret).id == token.id


@pytest.mark.parametrize('htmx', [False, True], ids=['page', 'htmx'])
def test_new_token_in_a_stale_session_asks_for_the_password_and_creates_nothing(
        client, logged_in, htmx):
    make_stale(logged_in)
    here = 'http://localhost' + URL
    response = create(client, {**HTMX, 'HX-Current-URL': here} if htmx else {'Referer': here})
    if htmx:
        assert response.status_code == 204
        assert reauth_next(response.headers['HX-Redirect']) == URL
    else:
        assert response.status_code == 303
        assert reauth_next(response.headers['Location']) == URL
    assert tokens() == []
    assert audit_count('token.create') == 0


def test_after_confirming_the_password_new_token_works_on_the_tokens_page(client, logged_in):
    make_stale(logged_in)
    asked = create(client, {'Referer': 'http://localhost' + URL})
    back = reauthenticate(client, asked.headers['Location'], PASSWORD)
    assert back.status_code == 303 and back.headers['Location'] == URL
    response = post_form(client, html(client.get(URL)), URL)
    assert response.status_code == 200
    secret = html(response).find('input', id='token-secret-plain')['value']
    assert [token.last4 for token in tokens()] == [secret[-4:]]


def test_after_creation_the_page_shows_only_the_last_four_characters(client, logged_in):
    secret = new_secret(client)
    response = client.get(URL)
    assert secret not in response.get_data(as_text=True)
    page = html(response)
    assert page.find(id='token-created').get_text(strip=True) == ''
    [token] = tokens()
    row = row_of(page, token)
    assert row.find('code').get_text() == f'pst_…{secret[-4:]}'
    cells = [cell.get_text(' ', strip=True) for cell in row.find_all(['th', 'td'])]
    assert cells[1] == 'Active' and cells[3] == 'Never'
    created = row.find_all('td')[1].find('time')
    assert re.fullmatch(r'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ', created['datetime'])
    assert created['title'].endswith(' UTC')
    assert created['datetime'].startswith(token.created_at.strftime('%Y-%m-%dT%H:%M'))


def test_the_secret_is_not_kept_in_the_session_cookie(app, client, logged_in):
    secret = new_secret(client)
    cookie = client.get_cookie(SESSION_COOKIE).value
    session = app.session_interface.get_signing_serializer(app).loads(cookie)
    assert secret not in repr(session)


def test_last_used_shows_when_the_token_was_used(client, logged_in):
    secret = new_secret(client)
    with database.db.connection_context():
        credentials.bearer(secret)
    [token] = tokens()
    last_used = row_of(html(client.get(URL)), token).find_all('td')[2].find('time')
    assert last_used['datetime'] == token.last_used_at.isoformat(timespec='seconds') + 'Z'


def test_at_the_limit_new_token_is_disabled_with_the_reason(client, logged_in):
    new_secret(client)
    new_secret(client)
    page = html(client.get(URL))
    button = page.find('button', id='new-token-button')
    assert button.has_attr('disabled')
    reason = page.find(id=button['aria-describedby'])
    assert reason.get_text(strip=True) == LIMIT_REFUSAL  # the reason is the refusal's
    assert len(page.find(id='token-list').find_all('tr', id=re.compile('^token-'))) == 2


def test_third_token_is_refused_without_javascript_with_a_message(client, logged_in):
    new_secret(client)
    new_secret(client)
    response = create(client)
    assert response.status_code == 422
    form = html(response).find('form', id='new-token')
    error = form.find(id=form.find('button')['aria-describedby'])
    assert error['role'] == 'alert' and error.get_text(strip=True) == LIMIT_REFUSAL
    assert len(tokens()) == 2
    assert audit_count('token.create') == 2


def test_third_token_is_refused_in_place_for_htmx(client, logged_in):
    new_secret(client)
    new_secret(client)
    response = create(client, HTMX)
    assert response.status_code == 422
    fragment = html(response)
    assert fragment.find('div', id='token-created').get_text(strip=True) == ''
    form = fragment.find('form', id='new-token')
    assert form['hx-swap-oob'] == 'true'
    error = form.find(id=form.find('button')['aria-describedby'])
    assert error['role'] == 'alert' and error.get_text(strip=True) == LIMIT_REFUSAL
    assert len(tokens()) == 2
    assert audit_count('token.create') == 2


def test_each_row_has_token_options_with_deactivate_and_delete(client, logged_in):
    new_secret(client)
    [token] = tokens()
    row = row_of(html(client.get(URL)), token)
    menu = row.find('details')
    summary = menu.find('summary')
    assert summary['role'] == 'button' and summary['aria-label'] == 'Token options'
    deactivate = menu.find('form', action=f'{URL}/{token.id}/deactivate')
    assert deactivate['method'] == 'post' and deactivate.find('input', attrs={'name': 'csrf_token'})
    assert deactivate.find('button').get_text(strip=True) == 'Deactivate'
    assert deactivate['hx-target'] == '#token-list'
    delete = menu.find('a', string='Delete')
    assert delete['href'] == f'{URL}/{token.id}/delete'
    assert delete['hx-get'] == delete['href'] and delete['hx-target'] == 'closest tr'


def test_deactivate_and_activate_without_javascript(client, logged_in):
    secret = new_secret(client)
    [token] = tokens()
    response = post_form(client, html(client.get(URL)), f'{URL}/{token.id}/deactivate')
    assert response.status_code == 303 and response.headers['Location'] == URL
    assert tokens()[0].status == 'inactive'
    assert audit_count('token.update') == 1
    with database.db.connection_context():
        assert credentials.bearer(secret) is None
    page = html(client.get(URL))
    assert flash_text(page) == f'Token pst_…{secret[-4:]} deactivated.'
    row = row_of(page, token)
    assert row.find_all('td')[0].get_text(strip=True) == 'Inactive'
    assert row.find('form', action=f'{URL}/{token.id}/activate').button.get_text() == 'Activate'

    response = post_form(client, page, f'{URL}/{token.id}/activate')
    assert response.status_code == 303
    assert tokens()[0].status == 'active'
    assert audit_count('token.update') == 2
    with database.db.connection_context():
        assert credentials.bearer(secret).id == token.id
    assert flash_text(html(client.get(URL))) == f'Token pst_…{secret[-4:]} activated.'


def test_deactivate_for_htmx_swaps_the_list_and_new_token_in_place(client, logged_in):
    secret = new_secret(client)
    [token] = tokens()
    response = post_form(client, html(client.get(URL)), f'{URL}/{token.id}/deactivate', HTMX)
    assert response.status_code == 200
    fragment = html(response)
    token_list = fragment.find('section', id='token-list')
    assert not token_list.has_attr('hx-swap-oob'), 'the main target of the row forms'
    row = row_of(token_list, token)
    assert row.find_all('td')[0].get_text(strip=True) == 'Inactive'
    assert row.find('summary').has_attr('autofocus'), 'focus returns to the row menu'
    assert fragment.find('form', id='new-token')['hx-swap-oob'] == 'true'
    assert flash_text(fragment) == f'Token pst_…{secret[-4:]} deactivated.'
    assert tokens()[0].status == 'inactive'
    assert audit_count('token.update') == 1


def test_deactivating_an_inactive_token_changes_nothing(client, logged_in):
    new_secret(client)
    [token] = tokens()
    page = html(client.get(URL))
    post_form(client, page, f'{URL}/{token.id}/deactivate')
    post_form(client, page, f'{URL}/{token.id}/deactivate')
    assert tokens()[0].status == 'inactive'
    assert audit_count('token.update') == 1


def test_delete_asks_first_on_a_page_of_its_own_without_javascript(client, logged_in):
    secret = new_secret(client)
    [token] = tokens()
    response = client.get(f'{URL}/{token.id}/delete')
    assert response.status_code == 200
    page = html(response)
    assert page.find('header', id='topbar') is not None
    assert page.find('h2').get_text(strip=True) == f'Delete token pst_…{secret[-4:]}?'
    assert current_menu_entry(page) == 'Tokens'
    form = page.find('form', action=f'{URL}/{token.id}/delete')
    assert form['method'] == 'post' and form.find('button').get_text(strip=True) == 'Delete'
    assert page.find('a', string='Cancel')['href'] == URL
    assert len(tokens()) == 1, 'asking deletes nothing'

    response = post_form(client, page, f'{URL}/{token.id}/delete')
    assert response.status_code == 303 and response.headers['Location'] == URL
    assert tokens() == []
    assert audit_count('token.delete') == 1
    with database.db.connection_context():
        assert credentials.bearer(secret) is None
    assert flash_text(html(client.get(URL))) == f'Token pst_…{secret[-4:]} deleted.'


def test_delete_asks_first_in_the_row_for_htmx_and_cancel_puts_the_row_back(client, logged_in):
    secret = new_secret(client)
    [token] = tokens()
    response = client.get(f'{URL}/{token.id}/delete', headers=HTMX)
    assert response.status_code == 200
    confirm = html(response)
    row = confirm.find('tr')
    assert row['id'] == f'token-{token.id}' and confirm.find('header') is None
    question = row.find(id=f'token-{token.id}-confirm')
    assert question.has_attr('autofocus')
    assert question.strong.get_text() == f'Delete token pst_…{secret[-4:]}?'
    form = row.find('form')
    assert form['hx-post'] == f'{URL}/{token.id}/delete' and form['hx-target'] == '#token-list'
    cancel = row.find('a', string='Cancel')
    assert cancel['href'] == URL and cancel['hx-get'] == f'{URL}/{token.id}'

    back = client.get(cancel['hx-get'], headers=HTMX)
    assert back.status_code == 200
    restored = html(back).find('tr')
    assert restored['id'] == f'token-{token.id}' and restored.find('summary').has_attr('autofocus')
    assert len(tokens()) == 1
    assert audit_count('token.delete') == 0


def test_delete_for_htmx_swaps_the_list_and_frees_new_token(client, logged_in):
    new_secret(client)
    new_secret(client)
    first, second = tokens()
    response = post_form(client, html(client.get(f'{URL}/{first.id}/delete')),
                         f'{URL}/{first.id}/delete', HTMX)
    assert response.status_code == 200
    fragment = html(response)
    token_list = fragment.find('section', id='token-list')
    assert row_of(token_list, first) is None and row_of(token_list, second) is not None
    button = fragment.find('form', id='new-token').find('button')
    assert not button.has_attr('disabled') and button.has_attr('autofocus')
    assert flash_text(fragment) == f'Token pst_…{first.last4} deleted.'
    assert [t.id for t in tokens()] == [second.id]
    assert audit_count('token.delete') == 1


def test_the_row_url_without_htmx_leads_to_the_page(client, logged_in):
    new_secret(client)
    [token] = tokens()
    response = client.get(f'{URL}/{token.id}')
    assert response.status_code == 303 and response.headers['Location'] == URL


def token_routes(token_id):
    base = f'{URL}/{token_id}'
    return [('GET', base), ('GET', f'{base}/delete'), ('POST', f'{base}/activate'),
            ('POST', f'{base}/deactivate'), ('POST', f'{base}/delete')]


@pytest.mark.parametrize('headers', [{}, HTMX], ids=['plain', 'htmx'])
def test_another_users_token_is_not_found_on_every_token_route(app, client, logged_in,
                                                               other_user, headers):
    bob = app.test_client()
    log_in(bob, 'bob')
    bob.post('/user/bob/settings/tokens',
             data={'csrf_token': csrf_token(bob, '/user/bob/settings/tokens')})
    [bobs] = tokens()
    token = csrf_token(client, URL)
    for method, url in token_routes(bobs.id) + token_routes('t_doesnotexist'):
        response = client.open(url, method=method, data={'csrf_token': token}, headers=headers)
        assert response.status_code == 404, (method, url)
        response = client.open(url.replace('/alice/', '/bob/'), method=method,
                               data={'csrf_token': token}, headers=headers)
        assert response.status_code == 404, (method, url)
    [unchanged] = tokens()
    assert unchanged.status == 'active' and unchanged.version_id == bobs.version_id
    assert audit_count('token.update') == 0 and audit_count('token.delete') == 0


def test_every_state_changing_token_route_is_in_the_csrf_check(app):
    routes = {(route[0], route[-1]) for route in state_changing_routes(app)}  # (method, URL)
    assert ('POST', URL) in routes
    for action in ('activate', 'deactivate', 'delete'):
        assert ('POST', f'{URL}/x_token_id/{action}') in routes
