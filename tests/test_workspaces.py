"""The console home: listing, creating and deleting workspaces, and their connection strings
(password masked; revealed or copied only when asked, and only by their owner)."""
import re

import pytest
from bs4 import BeautifulSoup
from flask import render_template

import database
import models
from app import create_app
from tests.conftest import SESSION_COOKIE, TEST_PASSWORD_KEY
from tests.helpers import (
    HTMX,
    PASSWORD,
    csrf_token,
    html,
    log_in,
    logged_in_as,
    make_stale,
    make_user,
    reauth_next,
    reauthenticate,
    run_jobs,
)
from workspaces import DatabasePassword, Workspace

RULES = '1–23 lowercase letters or digits.'
LIMIT_REASON = ('You have 10 workspaces, the most an account can have. '
                'Delete one to create another.')


def create(client, handle, headers=None):
    return client.post('/workspaces', headers=headers or {},
                       data={'handle': handle, 'csrf_token': csrf_token(client, '/')})


def open_workspaces(user, *handles):
    with database.db.connection_context():
        owner = models.User.get_by_id(user.id)
        return [Workspace.provision(owner, handle) for handle in handles]


def workspaces(user):
    with database.db.connection_context():
        return [w.handle for w in Workspace.for_user(user.id)]


def password_of(user):
    with database.db.connection_context():
        return DatabasePassword.for_user(user.id).password


def audit_count(action_type):
    with database.db.connection_context():
        return (models.AuditRecord.select()
                .where(models.AuditRecord.action_type == action_type).count())


def row_of(page, workspace):
    return page.find('li', id=f'workspace-{workspace.id}')


def facts(row):
    return {dt.get_text(strip=True): ' '.join(dd.get_text().split())
            for dt, dd in zip(row.find('dl').find_all('dt'), row.find('dl').find_all('dd'))}


def connection_field(page, workspace):
    """The block that shows the workspace's connection string."""
    return page.find('code', id=f'connection-{workspace.id}-string')


def post_form(client, page, action_url, headers=None):
    """Submit the form on `page` whose action is `action_url`, with its own hidden fields."""
    form = page.find('form', action=action_url)
    assert form is not None, f'no form posting to {action_url}'
    assert form['method'] == 'post'
    data = {field['name']: field['value'] for field in form.find_all('input', type='hidden')}
    return client.post(action_url, data=data, headers=headers or {})


def flash_text(page):
    return page.find(id='flash').get_text(' ', strip=True)


# The page

def test_home_is_a_full_page_with_the_create_form_and_an_empty_state(client, logged_in):
    response = client.get('/')
    assert response.status_code == 200
    assert 'HX-Request' in response.vary
    assert response.headers['Cache-Control'] == 'no-store'
    page = html(response)
    assert page.title.get_text() == 'Workspaces · Penstock'
    assert page.find('header', id='topbar') is not None
    assert page.find('h1').get_text(strip=True) == 'Workspaces'
    form = page.find('form', id='create-workspace')
    assert form['method'] == 'post' and form['action'] == '/workspaces'
    assert form.find('input', attrs={'name': 'csrf_token'}) is not None
    field = form.find('input', id='workspace-handle')
    assert form.find('label', attrs={'for': 'workspace-handle'}).get_text(strip=True) == (
        'Workspace handle')
    hint = page.find(id=field['aria-describedby'])
    assert hint.get_text(strip=True) == (
        f'{RULES} You can have up to 10 workspaces, with up to 20 connections open at once '
        'across them and up to 1GB of temporary files per connection.')
    button = form.find('button', id='create-workspace-button')
    assert button.get_text(strip=True) == 'Create workspace'
    assert not button.has_attr('disabled')
    assert page.find(id='workspace-list').get_text(strip=True) == (
        'You have no workspaces yet. Create one with the form above.')
    with database.db.connection_context():
        assert DatabasePassword.select().count() == 0, 'nothing written to show nothing'


def test_home_lists_each_workspace_with_host_database_created_and_masked_connection(
        client, logged_in, workspace_server):
    analytics, staging = open_workspaces(logged_in, 'analytics', 'staging')
    password = password_of(logged_in)
    response = client.get('/')
    body = response.get_data(as_text=True)
    assert password not in body, 'the password stays out of the page until it is asked for'
    page = html(response)
    rows = page.find(id='workspace-list').find_all('li', id=re.compile('^workspace-'))
    assert [row.find('h2').get_text(strip=True) for row in rows] == ['analytics', 'staging']
    row = row_of(page, analytics)
    assert facts(row)['Host'] == 'alice-analytics.workspaces.penstock.test'
    assert facts(row)['Database'] == analytics.database_name
    assert re.fullmatch(r'[a-z][a-z0-9]{7}', analytics.database_name)
    created = row.find('time')
    assert created['datetime'] == analytics.created_at.isoformat(timespec='seconds') + 'Z'
    masked = DatabasePassword.mask(password)
    field = connection_field(row, analytics)
    assert field.get_text() == (f'postgresql://alice:{masked}@alice-analytics.workspaces.'
                                f'penstock.test:{workspace_server.port}/'
                                f'{analytics.database_name}?hostaddr=127.0.0.1')
    group = field.find_parent(id=f'connection-{analytics.id}')
    assert group['role'] == 'group' and 'connection-string' in field['class']
    label = row.find(id=group['aria-labelledby'])
    assert label.get_text(' ', strip=True) == 'Connection string of analytics'
    assert re.fullmatch(r'[a-z0-9]{2}\*\*-\*{4}-\*{4}-\*\*[a-z0-9]{2}', masked)
    assert row.find(attrs={'hx-history': 'false'}) is None
    assert connection_field(page, staging).get_text().startswith(f'postgresql://alice:{masked}@')


def test_home_is_only_the_panel_for_htmx(client, logged_in):
    [analytics] = open_workspaces(logged_in, 'analytics')
    response = client.get('/', headers=HTMX)
    assert response.status_code == 200
    assert 'HX-Request' in response.vary
    fragment = html(response)
    assert fragment.find('html') is None and fragment.find('header') is None
    assert fragment.find('title').get_text() == 'Workspaces · Penstock'
    assert fragment.find('h1', id='panel-heading').get_text(strip=True) == 'Workspaces'
    assert fragment.find('form', id='create-workspace') is not None
    assert row_of(fragment, analytics) is not None
    assert fragment.find(id='flash')['hx-swap-oob'] == 'innerHTML'
    assert password_of(logged_in) not in response.get_data(as_text=True)


def test_host_uses_the_configured_domain_and_the_user_handle(database_url, workspace_server):
    app = create_app({'TESTING': True, 'SECRET_KEY': 'k', 'GRAVATAR_ENABLED': False,
                      'DATABASE_URL': database_url,
                      'DATABASE_PASSWORD_KEYS': TEST_PASSWORD_KEY,
                      'WORKSPACE_DOMAIN': 'db.example.net'})
    try:
        database.migrate(database.db.obj)
        client = app.test_client()
        user = make_user('zoe@example.com', 'zoe-2')
        log_in(client, 'zoe-2')
        [workspace] = open_workspaces(user, 'w1')
        row = row_of(html(client.get('/')), workspace)
        assert facts(row)['Host'] == 'zoe-2-w1.db.example.net'
        assert f'@zoe-2-w1.db.example.net:{workspace_server.port}/' in \
            connection_field(row, workspace).get_text()
        assert connection_field(row, workspace).get_text().startswith('postgresql://zoe-2:')
    finally:
        models.Config.workspace_domain = 'workspaces.penstock.test'
        database.db.close()


def test_home_needs_login(client, user):
    response = client.get('/')
    assert response.status_code == 302
    assert response.headers['Location'] == '/login?next=/'
    response = client.get('/', headers={**HTMX, 'HX-Current-URL': 'http://localhost/'})
    assert response.status_code == 401
    assert response.headers['HX-Redirect'] == '/login?next=/'


def test_login_lands_on_the_home_page(client, user):
    response = log_in(client, 'alice')
    assert response.headers['Location'] == '/'
    assert html(client.get('/')).find('h1').get_text(strip=True) == 'Workspaces'


@pytest.mark.parametrize('path', ['/workspaces/x_id/delete', '/workspaces/x_id/connection',
                                  '/workspaces/x_id'])
def test_workspace_pages_need_login(client, user, path):
    response = client.get(path)
    assert response.status_code == 302
    assert response.headers['Location'].startswith('/login?next=')


# Creating

def test_create_without_javascript_redirects_home_with_the_new_row(client, logged_in):
    response = create(client, 'analytics')
    assert response.status_code == 303
    assert response.headers['Location'] == '/'
    assert workspaces(logged_in) == ['analytics']
    assert audit_count('workspace.create') == 1
    page = html(client.get('/'))
    assert flash_text(page) == 'Workspace analytics created.'
    [row] = page.find(id='workspace-list').find_all('li', id=re.compile('^workspace-'))
    assert row.find('h2').get_text(strip=True) == 'analytics'


def test_create_for_htmx_swaps_the_list_and_resets_the_form(client, logged_in):
    response = create(client, 'analytics', HTMX)
    assert response.status_code == 200
    fragment = html(response)
    assert fragment.find('html') is None
    workspace_list = fragment.find('section', id='workspace-list')
    assert not workspace_list.has_attr('hx-swap-oob'), 'the main target of the create form'
    with database.db.connection_context():
        [workspace] = Workspace.for_user(logged_in.id)
    heading = row_of(workspace_list, workspace).find('h2')
    assert heading.get_text(strip=True) == 'analytics'
    assert heading.has_attr('autofocus')
    form = fragment.find('form', id='create-workspace')
    assert form['hx-swap-oob'] == 'true'
    assert form.find('input', id='workspace-handle')['value'] == ''
    assert fragment.find(id='flash').get_text(strip=True) == 'Workspace analytics created.'
    assert password_of(logged_in) not in response.get_data(as_text=True)


@pytest.mark.parametrize('handle', ['', 'Analytics', 'a-b', 'a_b', 'a' * 24, 'café', ' '])
def test_a_bad_handle_is_refused_in_the_form_with_the_rule(client, logged_in, handle):
    for headers in ({}, HTMX):
        response = create(client, handle, headers)
        assert response.status_code == 422
        page = html(response)
        field = page.find('input', id='workspace-handle')
        assert field['aria-invalid'] == 'true'
        assert field['value'] == handle
        error_id = field['aria-describedby'].split()[-1]
        assert page.find(id=error_id).get_text(strip=True) == f'A workspace handle is {RULES}'
    assert workspaces(logged_in) == []
    assert audit_count('workspace.create') == 0


@pytest.mark.parametrize('handle, message', [
    ('ana\x00lytics', 'Remove line breaks and other control characters (U+0000).'),
    ('ana\u200blytics', 'Remove invisible formatting characters (U+200B).'),
])
def test_a_handle_with_a_control_or_invisible_character_says_which(client, logged_in, handle,
                                                                   message):
    response = create(client, handle)
    assert response.status_code == 422
    page = html(response)
    error_id = page.find('input', id='workspace-handle')['aria-describedby'].split()[-1]
    assert page.find(id=error_id).get_text(strip=True) == message
    assert workspaces(logged_in) == []


def test_a_bad_handle_without_javascript_keeps_the_whole_page(client, logged_in):
    page = html(create(client, 'Bad!'))
    assert page.find('header', id='topbar') is not None
    assert page.find('h1').get_text(strip=True) == 'Workspaces'


def test_a_bad_handle_for_htmx_keeps_the_list_and_swaps_the_form(client, logged_in):
    open_workspaces(logged_in, 'analytics')
    fragment = html(create(client, 'Bad!', HTMX))
    assert fragment.find('html') is None
    assert fragment.find('form', id='create-workspace')['hx-swap-oob'] == 'true'
    assert len(fragment.find(id='workspace-list').find_all('li')) == 1
    assert fragment.find(id='flash').get_text(strip=True) == ''


def test_a_handle_the_user_already_has_is_refused(client, logged_in, other_user):
    open_workspaces(other_user, 'analytics')
    assert create(client, 'analytics').status_code == 303, 'another user may have it too'
    response = create(client, 'analytics', HTMX)
    assert response.status_code == 422
    page = html(response)
    field = page.find('input', id='workspace-handle')
    error = page.find(id=field['aria-describedby'].split()[-1])
    assert error.get_text(strip=True) == 'You already have a workspace with this handle.'
    assert workspaces(logged_in) == ['analytics']


def test_at_the_limit_create_workspace_is_disabled_with_the_reason(client, logged_in):
    open_workspaces(logged_in, *[f'w{i}' for i in range(9)])
    assert not html(client.get('/')).find('button', id='create-workspace-button').has_attr(
        'disabled')
    fragment = html(create(client, 'w9', HTMX))
    button = fragment.find('button', id='create-workspace-button')
    assert button.has_attr('disabled'), 'the tenth disables the button at once'
    page = html(client.get('/'))
    button = page.find('button', id='create-workspace-button')
    assert button.has_attr('disabled')
    assert page.find(id=button['aria-describedby']).get_text(strip=True) == LIMIT_REASON
    assert len(page.find(id='workspace-list').find_all('li')) == 10


@pytest.mark.parametrize('headers', [{}, HTMX], ids=['no-js', 'htmx'])
def test_one_workspace_too_many_is_refused_with_a_message(client, logged_in, headers):
    open_workspaces(logged_in, *[f'w{i}' for i in range(10)])
    response = create(client, 'extra', headers)
    assert response.status_code == 422
    page = html(response)
    button = page.find('button', id='create-workspace-button')
    reason = page.find(id=button['aria-describedby'])
    assert reason['role'] == 'alert' and reason.get_text(strip=True) == LIMIT_REASON
    assert len(workspaces(logged_in)) == 10
    assert audit_count('workspace.create') == 10


# Deleting

def test_each_row_has_delete_leading_to_a_confirmation(client, logged_in):
    [analytics] = open_workspaces(logged_in, 'analytics')
    row = row_of(html(client.get('/')), analytics)
    delete = row.find('a', string='Delete')
    assert delete['href'] == delete['hx-get'] == f'/workspaces/{analytics.id}/delete'
    assert delete['hx-target'] == 'closest li'
    assert row.find(id=delete['aria-describedby']).get_text(strip=True) == 'analytics'


def test_delete_without_javascript_asks_on_a_page_then_deletes(client, logged_in):
    analytics, staging = open_workspaces(logged_in, 'analytics', 'staging')
    response = client.get(f'/workspaces/{analytics.id}/delete')
    assert response.status_code == 200
    page = html(response)
    assert page.find('header', id='topbar') is not None
    assert page.find('h1').get_text(strip=True) == 'Delete workspace analytics?'
    # Focus starts at the question (where the password page also leads back to), not at the
    # top of the page above the banner and the top bar.
    assert page.find('h1').has_attr('autofocus')
    assert 'alice-analytics.workspaces.penstock.test stops answering' in page.get_text(' ')
    assert page.find('a', string='Cancel')['href'] == '/'
    assert workspaces(logged_in) == ['analytics', 'staging'], 'asking deletes nothing'

    response = post_form(client, page, f'/workspaces/{analytics.id}/delete')
    assert response.status_code == 303 and response.headers['Location'] == '/'
    assert workspaces(logged_in) == ['staging']
    assert audit_count('workspace.delete') == 1
    page = html(client.get('/'))
    assert flash_text(page) == 'Workspace analytics deleted.'
    assert row_of(page, analytics) is None and row_of(page, staging) is not None


def test_delete_for_htmx_confirms_in_the_row_then_swaps_the_list(client, logged_in):
    analytics, staging = open_workspaces(logged_in, 'analytics', 'staging')
    response = client.get(f'/workspaces/{analytics.id}/delete', headers=HTMX)
    assert response.status_code == 200
    confirm = html(response).find('li', id=f'workspace-{analytics.id}')
    question = confirm.find(class_='confirm-question')
    assert question.has_attr('autofocus')
    assert question.get_text(' ', strip=True).startswith('Delete workspace analytics?')
    form = confirm.find('form')
    assert form['hx-post'] == f'/workspaces/{analytics.id}/delete'
    assert form['hx-target'] == '#workspace-list'
    cancel = confirm.find('a', string='Cancel')
    assert cancel['hx-get'] == f'/workspaces/{analytics.id}' and cancel['href'] == '/'

    back = client.get(f'/workspaces/{analytics.id}', headers=HTMX)
    assert back.status_code == 200
    assert html(back).find('li', id=f'workspace-{analytics.id}').find('h2').has_attr('autofocus')
    assert client.get(f'/workspaces/{analytics.id}').headers['Location'] == '/'

    response = post_form(client, html(response), f'/workspaces/{analytics.id}/delete', HTMX)
    assert response.status_code == 200
    fragment = html(response)
    assert row_of(fragment, analytics) is None and row_of(fragment, staging) is not None
    assert fragment.find(id='flash').get_text(strip=True) == 'Workspace analytics deleted.'
    assert fragment.find('input', id='workspace-handle').has_attr('autofocus')
    assert workspaces(logged_in) == ['staging']


def test_deleting_at_the_limit_enables_create_workspace_again(client, logged_in):
    created = open_workspaces(logged_in, *[f'w{i}' for i in range(10)])
    page = html(client.get(f'/workspaces/{created[0].id}/delete'))
    fragment = html(post_form(client, page, f'/workspaces/{created[0].id}/delete', HTMX))
    button = fragment.find('button', id='create-workspace-button')
    assert not button.has_attr('disabled') and not button.has_attr('aria-describedby')


def test_the_last_workspace_deleted_leaves_the_empty_state(client, logged_in):
    [analytics] = open_workspaces(logged_in, 'analytics')
    page = html(client.get(f'/workspaces/{analytics.id}/delete'))
    post_form(client, page, f'/workspaces/{analytics.id}/delete')
    assert 'You have no workspaces yet.' in html(client.get('/')).find(id='workspace-list').text


# Deleting needs a recent password (it drops the database)

def test_a_stale_session_is_asked_for_the_password_before_the_question(client, logged_in):
    [analytics] = open_workspaces(logged_in, 'analytics')
    make_stale(logged_in)
    asked = client.get(f'/workspaces/{analytics.id}/delete')
    assert asked.status_code == 303
    assert reauth_next(asked.headers['Location']) == f'/workspaces/{analytics.id}/delete'
    htmx = client.get(f'/workspaces/{analytics.id}/delete', headers=HTMX)
    assert htmx.status_code == 204
    assert reauth_next(htmx.headers['HX-Redirect']) == f'/workspaces/{analytics.id}/delete'

    back = reauthenticate(client, asked.headers['Location'], PASSWORD)
    assert back.status_code == 303
    assert back.headers['Location'] == f'/workspaces/{analytics.id}/delete'
    page = html(client.get(back.headers['Location']))
    assert page.find('h1').get_text(strip=True) == 'Delete workspace analytics?'
    response = post_form(client, page, f'/workspaces/{analytics.id}/delete')
    assert response.status_code == 303 and response.headers['Location'] == '/'
    assert workspaces(logged_in) == []


@pytest.mark.parametrize('headers, answer', [
    ({'Referer': 'http://localhost/'}, 'Location'),
    ({**HTMX, 'HX-Current-URL': 'http://localhost/'}, 'HX-Redirect')], ids=['page', 'htmx'])
def test_a_stale_session_deletes_nothing_and_is_sent_to_confirm_the_password(
        client, logged_in, headers, answer):
    [analytics] = open_workspaces(logged_in, 'analytics')
    token = csrf_token(client, '/')
    make_stale(logged_in)
    response = client.post(f'/workspaces/{analytics.id}/delete', data={'csrf_token': token},
                           headers=headers)
    assert response.status_code in (204, 303)
    assert reauth_next(response.headers[answer]) == '/'
    assert workspaces(logged_in) == ['analytics']
    assert audit_count('workspace.delete') == 0
    assert reauthenticate(client, response.headers[answer], 'wrong password').status_code == 401
    assert client.post(f'/workspaces/{analytics.id}/delete', data={'csrf_token': token},
                       headers=headers).status_code in (204, 303)
    assert workspaces(logged_in) == ['analytics']


# Another user's workspace, and CSRF

@pytest.mark.parametrize('method, path', [
    ('GET', '/workspaces/{id}'), ('GET', '/workspaces/{id}/delete'),
    ('POST', '/workspaces/{id}/delete'), ('GET', '/workspaces/{id}/connection'),
    ('POST', '/workspaces/{id}/connection'), ('POST', '/workspaces/{id}/connection/copy')])
def test_another_users_workspace_is_not_found(client, logged_in, other_user, method, path):
    [theirs] = open_workspaces(other_user, 'secret')
    token = csrf_token(client, '/')
    for headers in ({}, HTMX):
        response = client.open(path.format(id=theirs.id), method=method,
                               data={'csrf_token': token}, headers=headers)
        assert response.status_code == 404
        assert password_of(other_user) not in response.get_data(as_text=True)
    assert client.open(path.format(id='w_nosuchworkspace0000'), method=method,
                       data={'csrf_token': token}).status_code == 404
    assert workspaces(other_user) == ['secret']


@pytest.mark.parametrize('path', ['/workspaces', '/workspaces/{id}/delete',
                                  '/workspaces/{id}/connection',
                                  '/workspaces/{id}/connection/copy'])
def test_every_workspace_form_needs_the_csrf_token(client, logged_in, path):
    [analytics] = open_workspaces(logged_in, 'analytics')
    for headers in ({}, HTMX, {'X-CSRFToken': 'forged'}):
        response = client.post(path.format(id=analytics.id), data={'handle': 'staging'},
                               headers=headers)
        assert response.status_code == 400
        assert password_of(logged_in) not in response.get_data(as_text=True)
    assert workspaces(logged_in) == ['analytics']


# Reveal, hide and copy

def test_reveal_without_javascript_shows_the_home_page_with_that_password(client, logged_in,
                                                                          workspace_server):
    analytics, staging = open_workspaces(logged_in, 'analytics', 'staging')
    password = password_of(logged_in)
    page = html(client.get('/'))
    response = post_form(client, page, f'/workspaces/{analytics.id}/connection')
    assert response.status_code == 200, 'rendered directly: the password never goes in a URL'
    assert 'Location' not in response.headers
    assert response.headers['Cache-Control'] == 'no-store'
    page = html(response)
    assert page.find('header', id='topbar') is not None
    revealed = page.find(id=f'connection-{analytics.id}')
    assert revealed['hx-history'] == 'false'
    field = connection_field(page, analytics)
    assert field.get_text() == (f'postgresql://alice:{password}@alice-analytics.workspaces.'
                                f'penstock.test:{workspace_server.port}/'
                                f'{analytics.database_name}?hostaddr=127.0.0.1')
    assert field.has_attr('autofocus')
    hide = revealed.find('button', string='Hide password')
    assert hide['type'] == 'submit' and 'reveal-toggle' in hide['class']
    form = hide.find_parent('form')
    assert form['method'] == 'get' and form['action'] == f'/workspaces/{analytics.id}/connection'
    assert form['hx-get'] == form['action'] and form['hx-target'] == f'#connection-{analytics.id}'
    assert revealed.find('a', string='Hide password') is None
    assert revealed.find('button', string='Reveal password') is None
    assert password not in connection_field(page, staging).get_text(), 'only the one asked for'
    assert page.find(id=f'connection-{staging.id}').get('hx-history') is None


def test_reveal_for_htmx_swaps_in_the_connection_string_kept_out_of_history(client, logged_in):
    [analytics] = open_workspaces(logged_in, 'analytics')
    password = password_of(logged_in)
    page = html(client.get('/'))
    reveal = page.find('form', action=f'/workspaces/{analytics.id}/connection')
    assert reveal['hx-post'] == reveal['action']
    assert reveal['hx-target'] == f'#connection-{analytics.id}'
    assert reveal.find('button').get_text(strip=True) == 'Reveal password'
    response = post_form(client, page, f'/workspaces/{analytics.id}/connection', HTMX)
    assert response.status_code == 200
    fragment = html(response)
    assert fragment.find('html') is None and fragment.find('header') is None
    root = fragment.find('div', id=f'connection-{analytics.id}')
    assert root['hx-history'] == 'false'
    assert password in connection_field(root, analytics).get_text()

    hidden = client.get(f'/workspaces/{analytics.id}/connection', headers=HTMX)
    assert hidden.status_code == 200
    assert password not in hidden.get_data(as_text=True)
    root = html(hidden).find('div', id=f'connection-{analytics.id}')
    assert not root.has_attr('hx-history')
    assert root.find('button', string='Reveal password').has_attr('autofocus')
    response = client.get(f'/workspaces/{analytics.id}/connection')
    assert response.status_code == 303
    assert response.headers['Location'] == f'/#connection-{analytics.id}', 'back to it'


def toggle_of(connection):
    """The connection's Reveal password or Hide password control: (tag, type, classes,
    name, its form's method)."""
    [button] = connection.find('div', class_='connection-actions').find_all('button')
    return (button.name, button['type'], button['class'], button.get_text(strip=True),
            button.find_parent('form')['method'])


@pytest.mark.parametrize('headers', [None, HTMX], ids=['page', 'htmx'])
def test_a_connection_string_is_a_block_with_copy_and_one_kind_of_reveal_control(
        client, logged_in, headers):
    [analytics] = open_workspaces(logged_in, 'analytics')
    password = password_of(logged_in)
    page = html(client.get('/'))
    masked = page.find('div', id=f'connection-{analytics.id}')
    assert masked.find('input', attrs={'name': None}) is None, 'no field to cut it off'
    block = connection_field(masked, analytics)
    assert block.find_parent(class_='connection-box').find(
        'button', attrs={'aria-label': 'Copy connection string'}) is not None
    assert toggle_of(masked) == ('button', 'submit', ['secondary', 'reveal-toggle'],
                                 'Reveal password', 'post')

    response = post_form(client, page, f'/workspaces/{analytics.id}/connection', headers)
    revealed = html(response).find('div', id=f'connection-{analytics.id}')
    assert toggle_of(revealed) == ('button', 'submit', ['secondary', 'reveal-toggle'],
                                   'Hide password', 'get')
    shown = connection_field(revealed, analytics).get_text()
    assert password in shown
    # The mask is as long as the password: the block keeps its lines when revealed.
    assert len(shown) == len(block.get_text()) and password not in block.get_text()


def test_copy_answers_the_real_connection_string_as_plain_text(client, logged_in,
                                                               workspace_server):
    [analytics] = open_workspaces(logged_in, 'analytics')
    password = password_of(logged_in)
    page = html(client.get('/'))
    copy = page.find('button', attrs={'aria-label': 'Copy connection string'})
    assert copy['type'] == 'button' and copy.get_text(strip=True) == ''  # an icon
    assert copy.find('svg')['aria-hidden'] == 'true'
    assert copy['title'] == 'Copy connection string'
    assert copy['data-copy-url'] == f'/workspaces/{analytics.id}/connection/copy'
    assert page.find(id=copy['data-copy-status'])['role'] == 'status'
    response = client.post(copy['data-copy-url'],
                           headers={'X-CSRFToken': csrf_token(client, '/')})
    assert response.status_code == 200
    assert response.mimetype == 'text/plain'
    assert response.headers['Cache-Control'] == 'no-store'
    assert response.get_data(as_text=True) == (
        f'postgresql://alice:{password}@alice-analytics.workspaces.penstock.test:'
        f'{workspace_server.port}/{analytics.database_name}?hostaddr=127.0.0.1')
    run_jobs()  # a worker makes the database: what was copied then logs in as it is
    assert logged_in_as(response.get_data(as_text=True)) == ('alice', analytics.database_name)


def test_the_password_is_in_no_url_or_cookie_after_revealing(app, client, logged_in):
    [analytics] = open_workspaces(logged_in, 'analytics')
    password = password_of(logged_in)
    page = html(client.get('/'))
    post_form(client, page, f'/workspaces/{analytics.id}/connection')
    cookie = client.get_cookie(SESSION_COOKIE).value
    session = app.session_interface.get_signing_serializer(app).loads(cookie)
    assert password not in repr(session)
    assert password not in ' '.join(
        str(tag.get(attr, '')) for tag in page.find_all(True) for attr in ('href', 'action'))


def test_the_connection_partial_takes_another_user_handle_for_previews(app, logged_in,
                                                                       workspace_server):
    [analytics] = open_workspaces(logged_in, 'analytics')
    with app.test_request_context(), database.db.connection_context():
        password = DatabasePassword.for_user(logged_in.id)
        workspace = Workspace.get_by_id(analytics.id)
        fragment = BeautifulSoup(render_template(
            'home/_connection.html', workspace=workspace, password=password,
            user_handle='alicia'), 'html.parser')
    value = fragment.find('code', id=f'connection-{analytics.id}-string').get_text()
    assert value.startswith('postgresql://alicia:')
    assert f'@alicia-analytics.workspaces.penstock.test:{workspace_server.port}/' in value
    assert password_of(logged_in) not in value
