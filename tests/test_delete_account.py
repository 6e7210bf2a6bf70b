"""Settings → Advanced → Delete Personal Account: the typed confirmation, and every row of the
account gone afterwards."""
import datetime
import io

import pytest
from peewee import ForeignKeyField
from PIL import Image

import credentials
import database
import models
import workspaces
from tests.helpers import HTMX, PASSWORD, csrf_token, every_model, html, log_in, make_user

URL = '/user/alice/settings/advanced'
CONFIRM = URL + '/delete'
# Columns that name a user by id without a foreign key (audit records outlive nothing here).
USER_ID_COLUMNS = ('actor_id', 'target_id', 'identity_id')


def user_columns(model):
    """Every column of `model` that can hold a user's id."""
    return [field for field in model._meta.sorted_fields
            if (isinstance(field, ForeignKeyField) and field.rel_model is models.User)
            or field.column_name in USER_ID_COLUMNS
            or (model is models.User and field is model._meta.primary_key)]


def rows_referencing(user_id):
    """For every model, how many of its rows name the user, found by enumerating the models
    (so a table added later is counted without anyone remembering to add it here)."""
    counts = {}
    with database.db.connection_context():
        for model in every_model():
            columns = user_columns(model)
            if columns:
                condition = columns[0] == user_id
                for column in columns[1:]:
                    condition |= column == user_id
                counts[model.__name__] = model.select().where(condition).count()
    return counts


def png():
    buffer = io.BytesIO()
    Image.new('RGB', (64, 48), (200, 80, 40)).save(buffer, 'PNG')
    return buffer.getvalue()


def give_everything(app, user, other_user):
    """Every kind of row an account can own: workspaces, a rotated password with its jobs,
    tokens, a temporary token, a pending CLI login, an avatar upload, a second session,
    preferences, a handle hold, and audit records naming it in someone else's log."""
    with database.db.connection_context():
        alice = models.User.get_by_id(user.id)
        workspaces.Workspace.provision(alice, 'analytics')
        workspaces.Workspace.provision(alice, 'staging')
        workspaces.DatabasePassword.rotate(alice, '192.0.2.1')
        credentials.Token.issue(alice)
        request = credentials.LoginRequest.start('192.0.2.2')
        request.exchange(request.confirm(alice), '192.0.2.2')
        credentials.LoginRequest.start('192.0.2.3').confirm(alice)
        models.AvatarUpload.start(alice, png())
        models.Preferences.change(alice, {'community_updates': True})
        models.HandleHold.create(handle='alice-old', user=alice,
                                 until=models.utcnow() + models.HANDLE_HOLD)
        bob = models.User.get_by_id(other_user.id)
        models.AuditRecord.write('user.update', alice, '192.0.2.4', target=bob, identity=bob)
        models.AuditRecord.write('user.update', bob, '192.0.2.5', target=alice, identity=bob)
    second = app.test_client()
    log_in(second, 'alice')
    return second


def delete(client, typed, headers=None):
    return client.post(CONFIRM, data={'csrf_token': csrf_token(client, URL), 'confirm': typed},
                       headers=headers or {})


def exists(user):
    with database.db.connection_context():
        return models.User.select().where(models.User.id == user.id).exists()


def test_delete_personal_account_opens_a_confirmation_on_the_page_without_javascript(
        client, logged_in):
    section = html(client.get(URL)).find('section', id='delete-account')
    assert section.find('h4').get_text() == 'Delete Personal Account'
    form = section.find('button', string='Delete Personal Account').find_parent('form')
    assert (form['method'], form['action']) == ('get', CONFIRM)
    assert form['hx-target'] == '#delete-account'

    response = client.get(CONFIRM)
    assert response.status_code == 200
    page = html(response)
    assert page.find('header', id='topbar') is not None
    section = page.find('section', id='delete-account')
    text = section.get_text(' ', strip=True)
    for words in ('workspaces', 'database password', 'API tokens', 'every session',
                  'avatar', 'audit log', 'cannot be brought back', 'held for 30 days',
                  'email address is free at once'):
        assert words in text, words
    field = section.find('input', id='delete-confirm')
    assert section.find('label', attrs={'for': 'delete-confirm'}).get_text() == (
        'Type your handle to confirm')
    assert field['name'] == 'confirm' and field['data-confirm-value'] == 'alice'
    button = section.find('button', string='Delete')
    assert button['id'] == field['data-confirm-button']
    assert not button.has_attr('disabled')  # without JavaScript the server checks the text
    form = button.find_parent('form')
    assert (form['method'], form['action']) == ('post', CONFIRM)
    assert form.find('input', attrs={'name': 'csrf_token'}) is not None
    assert section.find('a', string='Cancel')['href'] == URL
    assert exists(logged_in)


def test_delete_personal_account_confirms_inline_with_htmx_and_cancel_puts_it_back(
        client, logged_in):
    fragment = html(client.get(CONFIRM, headers=HTMX))
    assert fragment.find('h2') is None
    section = fragment.find('section', id='delete-account')
    assert section.find(attrs={'autofocus': True})['id'] == 'delete-account-question'
    assert section.find('form', method='post')['hx-target'] == '#delete-account'
    cancel = section.find('a', string='Cancel')
    back = html(client.get(cancel['hx-get'], headers={**HTMX, 'HX-Target': 'delete-account'}))
    assert back.find('h2') is None
    assert back.find('button', string='Delete Personal Account').has_attr('autofocus')


@pytest.mark.parametrize('typed', ['', 'alic', 'Alice', 'bob', 'alice alice'])
@pytest.mark.parametrize('headers', [{}, HTMX], ids=['page', 'htmx'])
def test_a_wrong_confirmation_deletes_nothing(client, logged_in, typed, headers):
    response = delete(client, typed, headers)
    assert response.status_code == 422
    page = html(response)
    assert (page.find('header', id='topbar') is None) == bool(headers)
    field = page.find('input', id='delete-confirm')
    assert field['aria-invalid'] == 'true' and field['value'] == typed
    assert page.find(id='delete-confirm-error').get_text(strip=True) == (
        'Type your handle exactly as it is shown to delete your account.')
    assert exists(logged_in)
    assert rows_referencing(logged_in.id)['Session'] == 1
    assert client.get(URL).status_code == 200


def test_deleting_removes_every_row_of_the_account_and_logs_every_browser_out(
        app, client, logged_in, other_user):
    second = give_everything(app, logged_in, other_user)
    before = rows_referencing(logged_in.id)
    assert all(before.values()), before  # every table has something of Alice's to lose
    bobs = rows_referencing(other_user.id)

    response = delete(client, ' alice ')

    assert response.status_code == 303
    assert response.headers['Location'] == '/goodbye'
    after = rows_referencing(logged_in.id)
    assert set(after) == set(before) and not any(after.values()), after
    assert rows_referencing(other_user.id)['User'] == bobs['User'] == 1
    goodbye = client.get('/goodbye')
    assert goodbye.status_code == 200
    assert html(goodbye).find('h1').get_text() == 'Your account has been deleted'
    assert html(goodbye).find('header', id='topbar') is None  # logged out
    assert client.get(URL).headers['Location'] == f'/login?next={URL}'
    assert second.get(URL).headers['Location'] == f'/login?next={URL}'
    assert log_in(app.test_client(), 'alice').status_code == 401


def test_deleting_with_htmx_sends_the_browser_to_goodbye(client, logged_in):
    response = delete(client, 'alice', HTMX)
    assert response.status_code == 204
    assert response.headers['HX-Redirect'] == '/goodbye'
    assert not exists(logged_in)


def test_the_email_is_free_at_once_and_the_handle_held_for_30_days(app, client, logged_in):
    delete(client, 'alice')
    with database.db.connection_context():
        hold = models.HandleHold.get_by_id('alice')
    assert hold.user_id is None and hold.until - hold.released_at == models.HANDLE_HOLD

    newcomer = app.test_client()
    page = html(newcomer.get('/signup'))
    form = {'csrf_token': page.find('input', attrs={'name': 'csrf_token'})['value'],
            'email': 'alice@example.com', 'handle': 'alice', 'password': PASSWORD}
    response = newcomer.post('/signup', data=form)
    assert response.status_code == 422
    error = html(response).find(id='handle-error').get_text(strip=True)
    assert error.startswith('This handle was in use until recently')
    assert html(response).find(id='email-error') is None  # the email itself is fine

    response = newcomer.post('/signup', data={**form, 'handle': 'alice2'})
    assert response.status_code == 302
    with database.db.connection_context():
        assert models.User.get(models.User.email == 'alice@example.com').handle == 'alice2'
        models.HandleHold.update(
            until=models.utcnow() - datetime.timedelta(seconds=1)).execute()
    make_user('carol@example.com', 'alice')  # once the hold is over, anyone may take it


def test_deleting_needs_the_csrf_token(client, logged_in):
    assert client.post(CONFIRM, data={'confirm': 'alice'}).status_code == 400
    assert exists(logged_in)


def test_another_users_account_cannot_be_deleted(client, logged_in, other_user):
    response = client.post('/user/bob/settings/advanced/delete',
                           data={'csrf_token': csrf_token(client, URL), 'confirm': 'bob'})
    assert response.status_code == 404
    assert client.get('/user/bob/settings/advanced/delete').status_code == 404
    assert exists(other_user) and exists(logged_in)


def test_goodbye_is_a_public_page(client):
    response = client.get('/goodbye')
    assert response.status_code == 200
    assert html(response).find('a', string='Sign up')['href'] == '/signup'
