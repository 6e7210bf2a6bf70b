"""Settings → Advanced → Handle: the preview of DNS name changes, the rules, the 30-day hold
and the old handle's settings addresses."""
import datetime
import json

import pytest

import database
import models
from tests.helpers import HTMX, PASSWORD, csrf_token, html, log_in
from workspaces import Workspace

URL = '/user/alice/settings/advanced'
SAVE = URL + '/handle'
PREVIEW = URL + '/handle/preview'
DOMAIN = 'workspaces.penstock.test'
WARNING = ('Your workspace DNS names all contain your user handle; changing it will result in '
           'changing the DNS name for ALL of your workspaces.')


@pytest.fixture
def workspaces(logged_in):
    with database.db.connection_context():
        alice = models.User.get_by_id(logged_in.id)
        return [Workspace.provision(alice, handle) for handle in ('analytics', 'staging')]


def host_changes(page):
    """The preview's list as (old host, new host) pairs."""
    return [(item.find('code', class_='old-host').get_text(),
             item.find('code', class_='new-host').get_text())
            for item in page.find('ul', class_='host-changes').find_all('li')]


def save(client, handle, previewed=False, headers=None):
    data = {'csrf_token': csrf_token(client, URL), 'handle': handle}
    if previewed:
        data['previewed'] = '1'
    return client.post(SAVE, data=data, headers=headers or {})


def handle_of(user):
    with database.db.connection_context():
        return models.User.get_by_id(user.id).handle


def field_error(page):
    field = page.find('input', id='handle')
    assert field['aria-invalid'] == 'true'
    error = page.find(id='handle-error')
    assert 'handle-error' in field['aria-describedby'].split()
    return error.get_text(strip=True)


def refused_in_place(client, logged_in, other_user, handle, message, previewed, headers):
    """Saving `handle` is refused with `message` in place, and neither handle changes."""
    response = save(client, handle, previewed, headers)
    assert response.status_code == 422
    page = html(response)
    assert (page.find('header', id='topbar') is None) == bool(headers)
    assert field_error(page) == message
    assert page.find('input', id='handle')['value'] == handle
    assert handle_of(logged_in) == 'alice' and handle_of(other_user) == 'bob'


def expire_holds():
    """Move every hold's end into the past, as if HANDLE_HOLD had gone by."""
    with database.db.connection_context():
        models.HandleHold.update(until=models.utcnow() - datetime.timedelta(seconds=1)).execute()


@pytest.mark.parametrize('headers', [{}, HTMX], ids=['page', 'htmx'])
def test_handle_section_shows_the_field_the_rules_the_hold_and_the_warning(
        client, logged_in, headers):
    page = html(client.get(URL, headers=headers))
    assert (page.find('header', id='topbar') is None) == bool(headers)
    section = page.find('section', id='change-handle')
    assert section.find('h3').get_text() == 'Handle'
    field = section.find('input', id='handle')
    assert section.find('label', attrs={'for': 'handle'}).get_text() == 'Handle'
    assert field['value'] == 'alice' and field['name'] == 'handle'
    assert section.find(id='handle-hint').get_text() == models.HANDLE_RULES
    text = section.get_text(' ', strip=True)
    assert WARNING in text and '30 days' in text
    form = field.find_parent('form')
    assert (form['method'], form['action'], form['hx-post']) == ('post', SAVE, SAVE)
    assert form.find('button').get_text() == 'Save'
    assert field['hx-get'] == PREVIEW and 'delay:' in field['hx-trigger']
    assert field['hx-target'] == '#handle-preview'
    sections = [s['id'] for s in page.find_all('section', class_='advanced-section')]
    assert sections == ['sessions', 'change-handle', 'reset-authentication', 'delete-account']


def test_preview_lists_exactly_the_workspace_hosts_that_change(client, logged_in, workspaces):
    response = client.get(PREVIEW, query_string={'handle': 'Carol'}, headers=HTMX)
    assert response.status_code == 200
    fragment = html(response)
    assert fragment.find(id='handle-preview')['aria-live'] == 'polite'
    assert host_changes(fragment) == [
        (f'alice-analytics.{DOMAIN}', f'carol-analytics.{DOMAIN}'),
        (f'alice-staging.{DOMAIN}', f'carol-staging.{DOMAIN}')]
    assert handle_of(logged_in) == 'alice'


@pytest.mark.parametrize('handle, message', [
    ('bob', models.TAKEN), ('admin', models.RESERVED),
    ('-x', 'A handle is ' + models.HANDLE_RULES)])
def test_preview_says_why_a_handle_cannot_be_taken(client, logged_in, other_user, workspaces,
                                                   handle, message):
    fragment = html(client.get(PREVIEW, query_string={'handle': handle}, headers=HTMX))
    assert fragment.find(class_='field-error').get_text(strip=True) == message
    assert fragment.find('ul', class_='host-changes') is None


@pytest.mark.parametrize('handle', ['alice', ' ALICE ', ''])
def test_preview_of_the_current_or_no_handle_goes_back_to_the_hint(client, logged_in,
                                                                   workspaces, handle):
    fragment = html(client.get(PREVIEW, query_string={'handle': handle}, headers=HTMX))
    assert fragment.find(id='handle-preview').get_text(strip=True) == (
        'Type a new handle to see which workspace DNS names change. '
        'Nothing changes until you confirm.')


@pytest.mark.parametrize('count, sentence', [
    (1, 'With the handle carol, the DNS name of your workspace changes:'),
    (2, 'With the handle carol, the DNS names of both your workspaces change:'),
    (3, 'With the handle carol, the DNS names of all 3 of your workspaces change:')])
def test_preview_counts_the_workspaces_in_words(client, logged_in, count, sentence):
    with database.db.connection_context():
        alice = models.User.get_by_id(logged_in.id)
        for handle in ('analytics', 'staging', 'prod')[:count]:
            Workspace.provision(alice, handle)
    fragment = html(client.get(PREVIEW, query_string={'handle': 'carol'}, headers=HTMX))
    assert ' '.join(fragment.find(id='handle-preview').p.get_text().split()) == sentence
    assert len(host_changes(fragment)) == count
    # A phone wraps a long host name after a dot, not in the middle of a word.
    new_host = fragment.find('code', class_='new-host')
    assert [str(part) for part in new_host.contents] == [
        'carol-analytics.', '<wbr/>', 'workspaces.', '<wbr/>', 'penstock.', '<wbr/>', 'test']


def test_preview_without_workspaces_says_no_names_change(client, logged_in):
    fragment = html(client.get(PREVIEW, query_string={'handle': 'carol'}, headers=HTMX))
    assert fragment.find(id='handle-preview').get_text(strip=True) == (
        'You have no workspaces, so no DNS names change.')


def test_preview_address_without_htmx_leads_to_the_page(client, logged_in):
    response = client.get(PREVIEW, query_string={'handle': 'carol'})
    assert response.status_code == 303
    assert response.headers['Location'] == URL + '#change-handle'


def test_without_javascript_the_first_save_previews_and_the_second_saves(
        client, logged_in, workspaces):
    response = save(client, ' Carol ')
    assert response.status_code == 200
    page = html(response)
    section = page.find('section', id='change-handle')
    assert 'Change your handle from alice to carol?' in section.get_text()
    assert host_changes(section) == [
        (f'alice-analytics.{DOMAIN}', f'carol-analytics.{DOMAIN}'),
        (f'alice-staging.{DOMAIN}', f'carol-staging.{DOMAIN}')]
    form = section.find('form', method='post')
    hidden = {i['name']: i['value'] for i in form.find_all('input', type='hidden')}
    assert hidden['handle'] == 'carol' and hidden['previewed'] == '1'
    assert form.find('button').get_text() == 'Change handle'
    cancel = section.find('a', string='Cancel')
    assert cancel['href'] == URL and 'button' in cancel['class']
    assert handle_of(logged_in) == 'alice'  # the preview changed nothing

    response = client.post(form['action'], data=hidden)

    assert response.status_code == 303
    assert response.headers['Location'] == '/user/carol/settings/advanced'
    assert handle_of(logged_in) == 'carol'
    page = html(client.get(response.headers['Location']))
    assert page.find(id='flash').get_text(strip=True) == 'Handle changed to carol.'
    assert page.find('input', id='handle')['value'] == 'carol'


def test_with_htmx_save_previews_in_place_then_redirects_to_the_new_address(
        client, logged_in, workspaces):
    response = save(client, 'carol', headers=HTMX)
    assert response.status_code == 200
    fragment = html(response)
    assert fragment.find('h2') is None
    section = fragment.find('section', id='change-handle')
    assert section.find(attrs={'autofocus': True})['id'] == 'change-handle-question'
    assert len(host_changes(section)) == 2
    assert section.find('form')['hx-target'] == '#change-handle'

    response = save(client, 'carol', previewed=True, headers=HTMX)

    assert response.status_code == 204
    assert response.headers['HX-Redirect'] == '/user/carol/settings/advanced'
    assert handle_of(logged_in) == 'carol'


def test_workspace_hosts_follow_the_new_handle_and_the_change_is_audited(
        client, logged_in, workspaces):
    save(client, 'carol', previewed=True)
    with database.db.connection_context():
        assert [w.host() for w in Workspace.for_user(logged_in.id)] == [
            f'carol-analytics.{DOMAIN}', f'carol-staging.{DOMAIN}']
        (record,) = models.AuditRecord.select().where(
            models.AuditRecord.identity == logged_in.id,
            models.AuditRecord.action_type == 'user.update')
    assert json.loads(record.data) == {'handle': {'old': 'alice', 'new': 'carol'}}
    assert record.actor_handle == 'carol' and record.actor_ip == '127.0.0.1'


@pytest.mark.parametrize('handle, message', [
    ('bob', models.TAKEN), ('BOB', models.TAKEN), ('Bob', models.TAKEN),
    ('admin', models.RESERVED), ('settings', models.RESERVED), ('WWW', models.RESERVED),
    ('-carol', 'A handle is ' + models.HANDLE_RULES),
    ('carol-', 'A handle is ' + models.HANDLE_RULES),
    ('car--ol', 'A handle is ' + models.HANDLE_RULES),
    ('car ol', 'A handle is ' + models.HANDLE_RULES),
    ('c' * 40, 'A handle is ' + models.HANDLE_RULES),
    ('', 'A handle is ' + models.HANDLE_RULES),
    ('alice', 'This is already your handle.'),
])
def test_a_handle_that_cannot_be_taken_is_refused_in_place(
        client, logged_in, other_user, handle, message):
    refused_in_place(client, logged_in, other_user, handle, message, False, {})


@pytest.mark.parametrize('handle, message', [
    ('BOB', models.TAKEN), ('api', models.RESERVED),
    ('a_b', 'A handle is ' + models.HANDLE_RULES)])
@pytest.mark.parametrize('headers', [{}, HTMX], ids=['page', 'htmx'])
@pytest.mark.parametrize('previewed', [False, True], ids=['first-save', 'confirmed'])
def test_a_refused_handle_is_refused_at_either_step_with_or_without_htmx(
        client, logged_in, other_user, handle, message, headers, previewed):
    refused_in_place(client, logged_in, other_user, handle, message, previewed, headers)


def test_a_released_handle_is_held_for_its_old_owner_for_30_days(
        app, client, logged_in, other_user):
    with database.db.connection_context():
        models.User.get_by_id(other_user.id).change_handle('bobby')
        hold = models.HandleHold.get_by_id('bob')
        assert hold.until - hold.released_at == models.HANDLE_HOLD

    response = save(client, 'bob', previewed=True)
    assert response.status_code == 422
    assert field_error(html(response)) == (
        'This handle was in use until recently and cannot be taken until '
        f'{hold.until:%b} {hold.until.day}, {hold.until.year}. Choose another.')
    assert handle_of(logged_in) == 'alice'

    bob = app.test_client()
    log_in(bob, 'bobby')
    answer = bob.post('/user/bobby/settings/advanced/handle',
                      data={'csrf_token': csrf_token(bob, '/user/bobby/settings/advanced'),
                            'handle': 'bob', 'previewed': '1'})
    assert answer.status_code == 303 and handle_of(other_user) == 'bob'  # the owner takes it back
    with database.db.connection_context():
        models.User.get_by_id(other_user.id).change_handle('robert')

    expire_holds()
    assert save(client, 'bob', previewed=True).status_code == 303
    assert handle_of(logged_in) == 'bob'


def test_the_old_handle_redirects_its_owner_for_the_hold(client, logged_in):
    save(client, 'carol', previewed=True)
    for path in ('/advanced', '/profile', '/tokens', '/audit'):
        response = client.get(f'/user/alice/settings{path}', query_string={'x': '1', 'y': 'a b'})
        assert response.status_code == 301, path
        assert response.headers['Location'] == f'/user/carol/settings{path}?x=1&y=a+b'
    assert client.get('/user/alice/settings/advanced').headers['Location'] == (
        '/user/carol/settings/advanced')
    token = client.get('/user/carol/settings/tokens')
    assert token.status_code == 200

    expire_holds()
    assert client.get('/user/alice/settings/advanced').status_code == 404


def test_the_old_handle_is_404_for_everyone_else(app, client, logged_in, other_user):
    save(client, 'carol', previewed=True)
    bob = app.test_client()
    log_in(bob, 'bob')
    assert bob.get('/user/alice/settings/advanced').status_code == 404
    assert bob.get('/user/carol/settings/advanced').status_code == 404
    anonymous = app.test_client()
    response = anonymous.get('/user/alice/settings/advanced')
    assert response.status_code == 302 and response.headers['Location'].startswith('/login')


def test_the_old_handle_no_longer_logs_in_and_the_new_one_does(app, client, logged_in):
    save(client, 'carol', previewed=True)
    fresh = app.test_client()
    assert log_in(fresh, 'alice', PASSWORD).status_code == 401
    assert log_in(fresh, 'carol', PASSWORD).status_code == 302


def test_changing_the_handle_needs_the_csrf_token(client, logged_in):
    response = client.post(SAVE, data={'handle': 'carol', 'previewed': '1'})
    assert response.status_code == 400
    assert handle_of(logged_in) == 'alice'


def test_the_home_page_lists_the_workspaces_under_their_new_hosts(client, logged_in,
                                                                  workspaces):
    save(client, 'carol', previewed=True)
    page = html(client.get('/'))
    hosts = [dt.find_next_sibling('dd').get_text(strip=True)
             for dt in page.find_all('dt', string='Host')]
    assert hosts == [f'carol-analytics.{DOMAIN}', f'carol-staging.{DOMAIN}']
    assert 'alice-' not in page.get_text()


# Looking up handles that are taken is throttled: it tells which accounts exist

LOOKUPS = 30  # HANDLE_LOOKUPS_PER_USER and SIGNUP_FAILURES_PER_IP in app.py


def preview(client, handle, ip='127.0.0.1'):
    response = client.get(PREVIEW, query_string={'handle': handle}, headers=HTMX,
                          environ_base={'REMOTE_ADDR': ip})
    assert response.status_code == 200
    return html(response).find(id='handle-preview').get_text(' ', strip=True)


def test_past_the_limit_the_preview_no_longer_tells_taken_from_free(client, logged_in,
                                                                    other_user, workspaces):
    for _ in range(LOOKUPS):
        assert 'carol' in preview(client, 'carol')  # a free handle is not counted
        assert preview(client, 'bob') == models.TAKEN
    taken, free = preview(client, 'bob'), preview(client, 'carol')
    assert taken == free
    assert taken.startswith('Many of the handles looked up from your account or network were '
                            'taken, so this one was not looked up. Try again in ')
    assert preview(client, 'alice-2') == free  # nothing is looked up any more
    # Saving asks the same question, and is refused the same way, changing nothing.
    for handle in ('bob', 'carol'):
        response = save(client, handle, headers=HTMX)
        assert response.status_code == 422
        assert field_error(html(response)) == taken
    assert handle_of(logged_in) == 'alice'


def test_the_limit_is_per_user_whatever_the_address(client, logged_in, other_user):
    for number in range(LOOKUPS):
        assert preview(client, 'bob', ip=f'198.51.100.{number}') == models.TAKEN
    assert preview(client, 'bob', ip='203.0.113.9') == preview(client, 'carol',
                                                                ip='203.0.113.9')


def test_the_limit_per_address_is_shared_with_refused_sign_ups(app, client, logged_in,
                                                               other_user):
    for _ in range(LOOKUPS):
        assert preview(client, 'bob') == models.TAKEN
    stranger = app.test_client()
    refused = stranger.post('/signup', data={
        'email': 'bob@example.com', 'handle': 'bobby', 'password': PASSWORD,
        'csrf_token': csrf_token(stranger, '/signup')})
    assert refused.status_code == 429
    # Another account from the same address has no allowance left either.
    carol = app.test_client()
    with database.db.connection_context():
        models.User.sign_up('carol@example.com', 'carol', PASSWORD)
    assert log_in(carol, 'carol').status_code == 302
    assert carol.get('/user/carol/settings/advanced/handle/preview', query_string={
        'handle': 'bob'}, headers=HTMX).get_data(as_text=True).count(models.TAKEN) == 0


def test_a_person_choosing_among_free_handles_is_never_stopped(client, logged_in, workspaces):
    for number in range(3 * LOOKUPS):
        assert f'alice{number}' in preview(client, f'alice{number}')
    assert save(client, 'alicia').status_code == 200
