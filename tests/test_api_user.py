"""PATCH /api/v0/user/{handle} with a new handle, and DELETE /api/v0/user/{handle}.

Answers go through tests.test_api.Api, which checks them against our OpenAPI document and
Steampipe's User schema."""
import datetime
import json

import jsonschema
import pytest
from peewee import ForeignKeyField

import announcements
import credentials
import database
import mail
import models
import workspaces
from tests.helpers import (
    IP,
    PASSWORD,
    Api,
    assert_conforms,
    audit,
    changeable_rows,
    errors_at,
    every_model,
    html,
    log_in,
    make_user,
    run_jobs,
)

STEAMPIPE_USER = 'urn:reference#/components/schemas/User'


# Changing the handle

def test_a_new_handle_is_taken_and_the_old_paths_are_404(api, alice, token):
    response = api('PATCH', '/api/v0/user/alice', {'handle': 'alicia'})
    assert response.status_code == 200
    body = response.get_json()
    assert (body['id'], body['handle'], body['version_id']) == (alice.id, 'alicia', 2)
    assert 'updated_at' in body
    assert_conforms(body, STEAMPIPE_USER, jsonschema.Draft4Validator)
    assert models.User.get_by_id(alice.id).handle == 'alicia'
    for method, path in [('PATCH', ''), ('DELETE', ''), ('GET', '/workspace'),
                         ('GET', '/password'), ('GET', '/token'),
                         ('GET', f'/token/{token[0].id}'), ('GET', '/preferences'),
                         ('GET', '/audit_log')]:
        response = api(method, '/api/v0/user/alice' + path, {} if method == 'PATCH' else None)
        assert response.status_code == 404, (method, path)
        assert 'Location' not in response.headers  # no redirect in the API
    assert models.User.get_or_none(models.User.id == alice.id) is not None
    assert api('GET', '/api/v0/actor').get_json()['handle'] == 'alicia'  # the token still works
    assert api('GET', f'/api/v0/user/alicia/token/{token[0].id}').status_code == 200


def test_a_handle_change_is_audited_with_the_old_and_new_handle(api, alice):
    api('PATCH', '/api/v0/user/alice', {'handle': 'alicia'})
    [record] = audit('user.update')
    assert json.loads(record.data) == {'handle': {'old': 'alice', 'new': 'alicia'}}
    assert (record.actor_ip, record.actor_id, record.identity_handle) == (IP, alice.id, 'alicia')
    hold = models.HandleHold.get_by_id('alice')
    assert hold.user_id == alice.id and hold.until > models.utcnow()


def test_a_handle_is_stored_in_lowercase(api):
    assert api('PATCH', '/api/v0/user/alice', {'handle': ' Alicia '}).get_json()['handle'] \
        == 'alicia'


def _held_by_someone_else():
    carol = make_user('carol@example.com', 'carol')
    with database.db.connection_context():
        models.User.get_by_id(carol.id).change_handle('caroline')


@pytest.mark.parametrize('handle, message, prepare', [
    ('admin', models.RESERVED, None),
    ('bob', models.TAKEN, None),
    ('BOB', models.TAKEN, None),
    ('carol', 'This handle was in use until recently', _held_by_someone_else),
    ('-alicia', 'A handle is ' + models.HANDLE_RULES, None),
    ('ali--cia', 'A handle is ' + models.HANDLE_RULES, None),
    ('ali_cia', 'A handle is ' + models.HANDLE_RULES, None),
    ('a' * 40, 'A handle is ' + models.HANDLE_RULES, None),
    ('', 'A handle is ' + models.HANDLE_RULES, None),
], ids=['reserved', 'taken', 'taken-any-case', 'held', 'leading-hyphen', 'double-hyphen',
        'underscore', 'too-long', 'empty'])
def test_a_handle_that_cannot_be_taken_is_a_400_at_body_handle(api, bob, handle, message,
                                                               prepare):
    if prepare:
        prepare()
    before = changeable_rows()
    response = api('PATCH', '/api/v0/user/alice', {'handle': handle})
    assert response.status_code == 400
    [error] = response.get_json()['validation_errors']
    assert error['location'] == 'body.handle' and error['message'].startswith(message)
    assert changeable_rows() == before


def test_a_released_handle_is_refused_to_others_but_its_owner_may_take_it_back(api, app, bob):
    assert api('PATCH', '/api/v0/user/alice', {'handle': 'alicia'}).status_code == 200
    bobs_api = Api(app, credentials.Token.issue(bob)[1])
    refused = bobs_api('PATCH', '/api/v0/user/bob', {'handle': 'alice'})
    assert refused.status_code == 400 and errors_at(refused) == ['body.handle']
    assert api('PATCH', '/api/v0/user/alicia', {'handle': 'alice'}).get_json()['handle'] \
        == 'alice'

    assert api('PATCH', '/api/v0/user/alice', {'handle': 'alicia'}).status_code == 200
    models.HandleHold.update(until=models.utcnow() - datetime.timedelta(seconds=1)).execute()
    assert bobs_api('PATCH', '/api/v0/user/bob', {'handle': 'alice'}).get_json()['handle'] \
        == 'alice'


def test_display_name_and_handle_change_together_with_a_record_each(api, alice):
    response = api('PATCH', '/api/v0/user/alice', {'display_name': 'Alicia', 'handle': 'alicia'})
    body = response.get_json()
    assert (body['display_name'], body['handle'], body['version_id']) == ('Alicia', 'alicia', 3)
    assert [json.loads(r.data) for r in audit('user.update')] == [
        {'display_name': {'old': None, 'new': 'Alicia'}},
        {'handle': {'old': 'alice', 'new': 'alicia'}}]


def test_a_refused_handle_leaves_the_display_name_unchanged_too(api, bob):
    before = changeable_rows()
    response = api('PATCH', '/api/v0/user/alice', {'display_name': 'Alicia', 'handle': 'bob'})
    assert response.status_code == 400 and errors_at(response) == ['body.handle']
    assert changeable_rows() == before


# Clearing the display name

@pytest.mark.parametrize('cleared', [None, '', '  \t '], ids=['null', 'empty', 'blank'])
def test_a_null_or_blank_display_name_clears_it_and_the_console_shows_the_handle(
        api, alice, client, cleared):
    api('PATCH', '/api/v0/user/alice', {'display_name': 'Alicia'})
    response = api('PATCH', '/api/v0/user/alice', {'display_name': cleared})
    assert response.status_code == 200
    body = response.get_json()
    assert (body['display_name'], body['version_id']) == ('', 3)
    assert_conforms(body, STEAMPIPE_USER, jsonschema.Draft4Validator)
    assert models.User.get_by_id(alice.id).display_name is None
    assert api('GET', '/api/v0/actor').get_json()['display_name'] == ''
    assert [json.loads(r.data) for r in audit('user.update')] == [
        {'display_name': {'old': None, 'new': 'Alicia'}},
        {'display_name': {'old': 'Alicia', 'new': None}}]
    log_in(client, 'alice')
    page = html(client.get('/'))
    assert page.find(class_='account-name').get_text(strip=True) == 'alice'


def test_clearing_a_display_name_that_is_not_set_changes_nothing(api):
    before = changeable_rows()
    response = api('PATCH', '/api/v0/user/alice', {'display_name': None})
    assert response.status_code == 200 and response.get_json()['version_id'] == 1
    assert changeable_rows() == before


def test_a_cleared_display_name_and_a_new_handle_change_together(api, alice):
    api('PATCH', '/api/v0/user/alice', {'display_name': 'Alicia'})
    body = api('PATCH', '/api/v0/user/alice', {'display_name': None, 'handle': 'alicia'}
               ).get_json()
    assert (body['display_name'], body['handle']) == ('', 'alicia')
    assert models.User.get_by_id(alice.id).display_name is None


# Malformed input

def test_a_lone_surrogate_in_the_display_name_is_a_400_at_body_display_name(api):
    before = changeable_rows()
    response = api('PATCH', '/api/v0/user/alice', data=b'{"display_name": "ab\\ud800cd"}',
                   content_type='application/json')
    assert response.status_code == 400 and errors_at(response) == ['body.display_name']
    assert 'lone surrogate' in response.get_json()['validation_errors'][0]['message']
    assert changeable_rows() == before


def test_a_deeply_nested_body_is_a_400_not_a_recursion_error(api):
    before = changeable_rows()
    response = api('PATCH', '/api/v0/user/alice', data=b'[' * 50_000,
                   content_type='application/json')
    assert response.status_code == 400
    assert response.get_json()['validation_errors'] == [
        {'location': 'body', 'message': 'nested too deeply'}]
    assert changeable_rows() == before


@pytest.mark.parametrize('field, value, message', [
    ('display_name', 'Alice\x00', 'Remove line breaks and other control characters (U+0000).'),
    ('display_name', 'Alice\u0378', 'Remove U+0378: it is not a character in Unicode'),
    ('display_name', 'Alice\ue000', 'Remove U+E000: private-use characters'),
    ('handle', 'ali\x00ce', 'Remove line breaks and other control characters (U+0000).'),
    ('handle', 'ali\u202ece', 'Remove invisible formatting characters (U+202E).'),
])
def test_a_refused_character_is_a_400_at_its_field_saying_which(api, field, value, message):
    before = changeable_rows()
    response = api('PATCH', '/api/v0/user/alice', {field: value})
    assert response.status_code == 400
    [error] = response.get_json()['validation_errors']
    assert error['location'] == f'body.{field}' and error['message'].startswith(message)
    assert changeable_rows() == before


# Deleting the account

def rows_of(user_id):
    """How many rows of each table belong to `user_id`: by every foreign key to User, and by
    the columns that name a user by id. Enumerates the models, so a new one is counted."""
    counts = {}
    for model in every_model():
        conditions = [field == user_id for field in model._meta.sorted_fields
                      if (isinstance(field, ForeignKeyField) and field.rel_model is models.User)
                      or field.name in ('actor_id', 'target_id', 'identity_id', 'user_id')]
        if model is models.User:
            conditions.append(models.User.id == user_id)
        if conditions:
            query = model.select().where(conditions[0])
            for condition in conditions[1:]:
                query = query.orwhere(condition)
            counts[model.__name__] = query.count()
    return counts


def give_everything(user, client):
    """A row in every table an account can reach."""
    user.change_handle('alicia')
    user.change_handle('alice')  # a hold on "alicia", for its old owner
    for handle in ('analytics', 'staging'):
        workspaces.Workspace.provision(user, handle)
    workspaces.DatabasePassword.rotate(user)  # propagation jobs
    secret = credentials.Token.new_secret('pstt_')
    credentials.TemporaryToken.create(user=user, token_hash=models.sha256(secret),
                                      expires_at=models.utcnow() + datetime.timedelta(days=1))
    request = credentials.LoginRequest.start('192.0.2.1')
    request.confirm(user)
    models.AvatarUpload.create(user=user, original=b'x', preview=b'x', width=1, height=1,
                               preview_width=1, preview_height=1,
                               expires_at=models.utcnow() + datetime.timedelta(hours=1))
    models.Avatar.for_user(user.id)
    announcements.announce('product_updates', 'News', 'Something new.')  # an email
    log_in(client, user.handle)  # a session


def test_deleting_the_account_answers_with_the_user_as_it_was(api, alice):
    expected = api('GET', '/api/v0/actor').get_json()
    response = api('DELETE', '/api/v0/user/alice', {'password': PASSWORD})
    assert response.status_code == 200
    assert response.get_json() == expected
    assert_conforms(response.get_json(), STEAMPIPE_USER, jsonschema.Draft4Validator)


def test_after_deletion_the_token_is_401_and_no_row_of_the_account_is_left(
        api, alice, bob, client, workspace_server):
    """Every row of the account goes at once but its `user.delete` propagation jobs, which
    outlive it to drop its databases and role (once a worker has carried them out the server
    holds nothing of it either), the record of its role's verifier (it goes with the role),
    and the one System email that tells its address so."""
    give_everything(alice, client)
    credentials.Token.issue(bob)
    run_jobs()
    databases = sorted(row.database_name for row in alice.workspaces)
    assert named_on_server(workspace_server, 'alice', databases) == (['alice'], databases)
    counts = rows_of(alice.id)
    assert set(counts) >= {'User', 'Session', 'Token', 'TemporaryToken', 'LoginRequest',
                           'Preferences', 'Avatar', 'AvatarUpload', 'Workspace',
                           'DatabasePassword', 'PropagationJob', 'AuditRecord', 'HandleHold',
                           'Email'}
    assert all(counts.values()), counts
    bobs_before = rows_of(bob.id)
    Job = workspaces.PropagationJob
    before = {job.id for job in Job.select()}

    assert api('DELETE', '/api/v0/user/alice', {'password': PASSWORD}).status_code == 200
    deleting = list(Job.select().where(Job.id.not_in(before)))
    assert [(job.user_id, job.reason, job.status) for job in deleting] == [
        (alice.id, 'user.delete', 'pending')]
    jobs = counts['PropagationJob'] + 1  # the jobs she had, and the new one
    assert rows_of(alice.id) == dict(dict.fromkeys(counts, 0), PropagationJob=jobs, Email=1,
                                     RoleVerifier=1)
    assert [(email.kind, email.to_address) for email in
            mail.Email.select().where(mail.Email.user_id == alice.id)] == [
        ('user.delete', 'alice@example.com')]
    assert {job.reason for job in Job.select().where(Job.user_id == alice.id,
                                                     Job.status == 'pending')} == {'user.delete'}
    assert rows_of(bob.id) == bobs_before
    response = api('GET', '/api/v0/actor')
    assert response.status_code == 401 and response.headers['WWW-Authenticate'] == 'Bearer'
    assert api('DELETE', '/api/v0/user/alice', {'password': PASSWORD}).status_code == 401
    assert client.get('/user/alice/settings/profile').status_code == 302  # logged out there too

    run_jobs()
    assert named_on_server(workspace_server, 'alice', databases) == ([], [])
    assert workspace_server.query("SELECT count(*) FROM pg_shdescription WHERE description "
                                  "LIKE %s", (f'penstock user {alice.id}%',)) == [(0,)]
    assert Job.get_by_id(deleting[0].id).status == 'applied'
    assert rows_of(alice.id)['RoleVerifier'] == 0


def named_on_server(workspace_server, role, databases):
    """(the role `role` if the server has it, those of `databases` it has)."""
    roles = workspace_server.query('SELECT rolname FROM pg_roles WHERE rolname = %s', (role,))
    found = workspace_server.query('SELECT datname FROM pg_database WHERE datname = ANY(%s)',
                                   (databases,))
    return [name for (name,) in roles], sorted(name for (name,) in found)


def test_after_deletion_the_email_is_free_and_the_handle_is_held(api):
    api('DELETE', '/api/v0/user/alice', {'password': PASSWORD})
    with pytest.raises(models.Invalid) as refused:
        make_user('someone@example.com', 'alice')
    assert refused.value.errors['handle'].startswith('This handle was in use until recently')
    again = make_user('alice@example.com', 'alice2')
    assert again.email == 'alice@example.com'


def test_another_user_cannot_be_deleted(api, bob):
    before = changeable_rows()
    response = api('DELETE', '/api/v0/user/bob')
    assert response.status_code == 404
    assert changeable_rows() == before


# Deleting needs the password, not only a token

WRONG_TIMES = 10  # LOGIN_FAILURES_PER_ACCOUNT in app.py: the allowance a login has


@pytest.mark.parametrize('body', [None, {}, {'password': ''}, {'password': None}])
def test_a_token_alone_cannot_delete_the_account(api, alice, body):
    before = changeable_rows()
    response = api('DELETE', '/api/v0/user/alice', body)
    assert response.status_code == 403
    problem = response.get_json()
    assert problem['title'] == 'Forbidden'
    assert 'needs its password' in problem['detail']
    assert problem['validation_errors'] == [{'location': 'body.password', 'message': 'required'}]
    assert changeable_rows() == before
    assert api('GET', '/api/v0/actor').status_code == 200
    assert failed_logins(alice) == 0  # no password was guessed


def test_a_wrong_password_is_403_deletes_nothing_and_is_a_failed_login(api, alice):
    before_rows = changeable_rows()
    response = api('DELETE', '/api/v0/user/alice', {'password': 'not the password'})
    assert response.status_code == 403
    assert response.get_json()['detail'] == 'The password is wrong, so nothing was deleted.'
    assert response.get_json()['validation_errors'] == [
        {'location': 'body.password', 'message': 'wrong password'}]
    assert failed_logins(alice) == 1
    after_rows = changeable_rows()
    assert len(after_rows.pop('AuditRecord')) == len(before_rows.pop('AuditRecord')) + 1
    assert after_rows == before_rows
    assert api('GET', '/api/v0/actor').status_code == 200


def test_a_malformed_body_is_400_and_deletes_nothing(api, alice):
    response = api.client.delete('/api/v0/user/alice', data='{"password": "ab\\ud800cd"}',
                                 content_type='application/json',
                                 headers={'Authorization': f'Bearer {api.secret}'})
    assert response.status_code == 400
    assert 'lone surrogate' in response.get_json()['validation_errors'][0]['message']
    assert api('GET', '/api/v0/actor').status_code == 200


def test_a_password_that_is_not_a_string_is_400(api, alice):
    response = api('DELETE', '/api/v0/user/alice', {'password': 12345678})
    assert response.status_code == 400
    assert response.get_json()['validation_errors'] == [
        {'location': 'body.password', 'message': 'must be a string'}]
    assert failed_logins(alice) == 0


def test_wrong_passwords_by_delete_use_up_the_login_allowance(api, alice, app):
    for _ in range(WRONG_TIMES):
        assert api('DELETE', '/api/v0/user/alice', {'password': 'guess'}).status_code == 403
    # The right password is not even checked now, here or at the login page.
    refused = api('DELETE', '/api/v0/user/alice', {'password': PASSWORD})
    assert refused.status_code == 429
    assert int(refused.headers['Retry-After']) >= 1
    assert 'nothing was deleted' in refused.get_json()['detail']
    assert log_in(app.test_client(), 'alice').status_code == 429
    assert failed_logins(alice) == WRONG_TIMES
    assert api('GET', '/api/v0/actor').status_code == 200  # still there


def test_wrong_logins_use_up_the_allowance_of_delete(api, alice, app):
    attacker = app.test_client()
    for _ in range(WRONG_TIMES):
        assert log_in(attacker, 'alice', 'guess').status_code == 401
    assert api('DELETE', '/api/v0/user/alice', {'password': PASSWORD}).status_code == 429
    assert api('GET', '/api/v0/actor').status_code == 200


def test_the_right_password_gives_its_attempt_back(api, alice, app):
    attacker = app.test_client()
    for _ in range(WRONG_TIMES - 1):
        assert log_in(attacker, 'alice', 'guess').status_code == 401
    right = api('DELETE', '/api/v0/user/alice', {'password': PASSWORD})
    assert right.status_code == 200
    with database.db.connection_context():
        assert models.User.get_or_none(models.User.id == alice.id) is None


def test_a_password_changed_after_the_check_deletes_nothing(alice):
    """The password is checked before the write lock is taken; the deletion goes ahead only
    if the hash it matched is still the account's once the lock is held."""
    with database.db.connection_context():
        checked = alice.password_checked(PASSWORD)
        assert checked
        models.User.update(password_hash=checked + 'changed').where(
            models.User.id == alice.id).execute()
        with pytest.raises(models.Refused):
            alice.delete_account(IP, password_hash=checked)
        assert models.User.get_or_none(models.User.id == alice.id) is not None


def failed_logins(user):
    with database.db.connection_context():
        return models.AuditRecord.select().where(
            models.AuditRecord.action_type == 'user.login.failed',
            models.AuditRecord.target_id == user.id).count()


# Finding handles taken is throttled, as in the console's preview

LOOKUPS = 30  # HANDLE_LOOKUPS_PER_USER in app.py


def test_past_the_limit_a_new_handle_is_429_whether_taken_or_free(api, alice, bob):
    for _ in range(LOOKUPS):
        assert api('PATCH', '/api/v0/user/alice', {'display_name': 'A'}).status_code == 200
        response = api('PATCH', '/api/v0/user/alice', {'handle': 'bob'})
        assert response.status_code == 400
        assert response.get_json()['validation_errors'] == [
            {'location': 'body.handle', 'message': models.TAKEN}]
    taken = api('PATCH', '/api/v0/user/alice', {'handle': 'bob'})
    free = api('PATCH', '/api/v0/user/alice', {'handle': 'alicia', 'display_name': 'B'})
    assert taken.status_code == free.status_code == 429
    assert taken.get_json()['detail'] == free.get_json()['detail']
    assert int(free.headers['Retry-After']) >= 1
    actor = api('GET', '/api/v0/actor').get_json()
    assert (actor['handle'], actor['display_name']) == ('alice', 'A')


@pytest.mark.parametrize('password', ['a\x07bcdefgh', 'x' * (models.PASSWORD_MAX + 1)])
def test_what_no_password_can_be_is_400_and_not_counted(api, alice, password):
    response = api('DELETE', '/api/v0/user/alice', {'password': password})
    assert response.status_code == 400
    assert [error['location'] for error in response.get_json()['validation_errors']] == [
        'body.password']
    assert failed_logins(alice) == 0
    assert api('GET', '/api/v0/actor').status_code == 200
