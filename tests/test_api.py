"""The JSON API /api/v0: bearer auth, every endpoint, errors, pagination and audit records.

Every answer a test gets through `Api` is checked twice: against the schema our OpenAPI
document declares for that operation and status, and against the Steampipe Cloud schema
SPEC section 9 names (../shared/reference/steampipe-cloud-openapi.yaml)."""
import datetime
import json

import pytest

import credentials
import database
import models
import workspaces
from tests.helpers import IP, Api, audit, changeable_rows, check_answer, errors_at, log_in


# Authentication

def test_actor_is_the_user_the_token_belongs_to(api, alice):
    response = api('GET', '/api/v0/actor')
    assert response.status_code == 200
    body = response.get_json()
    assert (body['id'], body['handle'], body['status']) == (alice.id, 'alice', 'accepted')
    assert body['avatar_url'].startswith('http://localhost/avatars/' + alice.id)
    assert 'updated_at' not in body  # never changed: left out, not null


def test_a_temporary_token_authenticates_until_it_expires(app, alice):
    secret = credentials.Token.new_secret('pstt_')
    row = credentials.TemporaryToken.create(user=alice, token_hash=models.sha256(secret),
                                            expires_at=models.utcnow() + datetime.timedelta(days=1))
    api = Api(app, secret)
    assert api('GET', '/api/v0/actor').get_json()['handle'] == 'alice'
    credentials.TemporaryToken.update(expires_at=models.utcnow() - datetime.timedelta(seconds=1)) \
        .where(credentials.TemporaryToken.id == row.id).execute()
    assert api('GET', '/api/v0/actor').status_code == 401


def _mangled(secret):
    return secret[:-1] + ('A' if secret[-1] != 'A' else 'B')


def _deactivate(row):
    credentials.Token.update(status='inactive').where(credentials.Token.id == row.id).execute()


@pytest.mark.parametrize('authorization, spoil', [
    (None, None),
    ('Basic YWxpY2U6cGFzc3dvcmQ=', None),
    ('Bearer', None),
    ('Bearer not-a-token', None),
    ('Bearer {secret}x', None),
    ('Bearer {mangled}', None),
    ('Bearer {unknown}', None),
    ('Bearer {secret}', _deactivate),
    ('Bearer {secret}', lambda row: row.remove()),
    ('Bearer {secret}', lambda row: credentials.reset_authentication(row.user)),
], ids=['no-header', 'basic', 'empty', 'malformed', 'too-long', 'bad-checksum', 'unknown',
        'inactive', 'deleted', 'reset'])
def test_a_missing_or_dead_token_gets_401(app, token, authorization, spoil):
    row, secret = token
    if spoil:
        spoil(row)
    headers = {}
    if authorization:
        headers['Authorization'] = authorization.format(
            secret=secret, mangled=_mangled(secret),
            unknown=credentials.Token.new_secret('pst_'))
    response = app.test_client().get('/api/v0/actor', headers=headers)
    check_answer(app, 'GET', '/api/v0/actor', response)
    assert response.status_code == 401
    assert response.headers['WWW-Authenticate'] == 'Bearer'
    assert response.get_json()['title'] == 'Unauthorized'


def test_every_api_route_refuses_a_request_without_a_token(app, alice, token):
    before = changeable_rows()
    # CLI login's endpoints take no token: the CLI has none yet, the browser has its session.
    routes = [(method, rule) for rule in app.url_map.iter_rules()
              if rule.endpoint.startswith('api.') and not rule.endpoint.startswith('api.login_')
              for method in rule.methods - {'HEAD', 'OPTIONS'}]
    assert len(routes) == 16
    for method, rule in routes:
        url = rule.build({'handle': 'alice', 'token_id': token[0].id})[1]
        response = app.test_client().open(url, method=method, json={'status': 'inactive'})
        check_answer(app, method, url, response)
        assert response.status_code == 401, (method, url)
    assert changeable_rows() == before


def test_cookies_alone_do_not_authenticate_the_api(client, logged_in, token):
    before = changeable_rows()
    assert client.get('/api/v0/actor').status_code == 401
    assert client.post('/api/v0/user/alice/token').status_code == 401
    assert client.patch('/api/v0/user/alice', json={'display_name': 'Cookie'}).status_code == 401
    assert client.delete(f'/api/v0/user/alice/token/{token[0].id}').status_code == 401
    assert changeable_rows() == before


# The user

def test_patching_the_user_changes_the_display_name_once_and_audits_it(api, alice):
    response = api('PATCH', '/api/v0/user/alice', {'display_name': '  Alice Liddell '})
    assert response.status_code == 200
    body = response.get_json()
    assert body['display_name'] == 'Alice Liddell' and body['version_id'] == 2
    assert 'updated_at' in body
    assert models.User.get_by_id(alice.id).display_name == 'Alice Liddell'
    assert api('PATCH', '/api/v0/user/alice', {'display_name': 'Alice Liddell'}
               ).get_json()['version_id'] == 2
    [record] = audit('user.update')
    assert record.actor_ip == IP and record.actor_id == alice.id
    assert json.loads(record.data) == {'display_name': {'old': None, 'new': 'Alice Liddell'}}


def test_the_current_handle_is_accepted_and_changes_nothing(api, alice):
    before = changeable_rows()
    response = api('PATCH', '/api/v0/user/alice', {'handle': 'alice'})
    assert response.status_code == 200 and response.get_json()['version_id'] == 1
    assert changeable_rows() == before


@pytest.mark.parametrize('body, locations', [
    ({'display_name': 'x' * 101}, ['body.display_name']),
    ({'display_name': 'two\nlines'}, ['body.display_name']),
    ({'display_name': 5}, ['body.display_name']),
    ({'display_name': [], 'handle': ['alice']}, ['body.display_name', 'body.handle']),
    ({'display_name': 'Al', 'handle': None}, ['body.handle']),
    ({'display_name': 'Al', 'email': 'al@example.com'}, ['body.email']),
    ([{'display_name': 'Al'}], ['body']),
    ('Al', ['body']),
], ids=['too-long', 'control-characters', 'number', 'list-and-list', 'null-handle',
        'unknown-field', 'array', 'string'])
def test_an_invalid_user_patch_is_a_400_and_changes_nothing(api, body, locations):
    before = changeable_rows()
    response = api('PATCH', '/api/v0/user/alice', body)
    assert response.status_code == 400
    assert sorted(errors_at(response)) == locations
    assert changeable_rows() == before


def test_a_body_that_is_not_json_is_a_400(api):
    response = api('PATCH', '/api/v0/user/alice', data='display_name=Al',
                   content_type='application/x-www-form-urlencoded')
    assert response.status_code == 400 and errors_at(response) == ['body']


# Tokens

def test_creating_a_token_returns_its_secret_this_once(api, alice):
    response = api('POST', '/api/v0/user/alice/token')
    assert response.status_code == 201
    body = response.get_json()
    secret = body.pop('token')
    assert credentials.Token.prefix_of(secret) == 'pst_' and body['last4'] == secret[-4:]
    assert response.headers['Location'] == f'/api/v0/user/alice/token/{body["id"]}'
    assert body['status'] == 'active' and body['user_id'] == alice.id
    assert api('GET', '/api/v0/actor', secret=secret).status_code == 200
    listed = api('GET', '/api/v0/user/alice/token').get_json()['items']
    fetched = api('GET', response.headers['Location']).get_json()
    assert secret not in json.dumps([listed, fetched])
    [record] = [r for r in audit('token.create') if r.target_id == body['id']]
    assert record.actor_ip == IP


def test_an_empty_json_object_may_be_sent_but_no_fields(api):
    assert api('POST', '/api/v0/user/alice/token', {}).status_code == 201
    response = api('POST', '/api/v0/user/alice/token', {'name': 'ci'})
    assert response.status_code == 400 and errors_at(response) == ['body.name']


def test_a_third_token_is_refused_with_409_and_the_reason(api, alice):
    assert api('POST', '/api/v0/user/alice/token').status_code == 201
    response = api('POST', '/api/v0/user/alice/token')
    assert response.status_code == 409
    assert response.get_json()['detail'] == (
        'You already have 2 tokens, the most you can have at a time. '
        'Delete one to create another.')
    assert credentials.Token.select().where(credentials.Token.user == alice).count() == 2
    assert len(audit('token.create')) == 2


def test_tokens_are_listed_oldest_first_one_page_at_a_time(api, token):
    second = api('POST', '/api/v0/user/alice/token').get_json()['id']
    first_page = api('GET', '/api/v0/user/alice/token?limit=1').get_json()
    assert [t['id'] for t in first_page['items']] == [token[0].id]
    second_page = api('GET', '/api/v0/user/alice/token?limit=1&next_token='
                      + first_page['next_token']).get_json()
    assert [t['id'] for t in second_page['items']] == [second]
    assert 'next_token' not in second_page
    whole = api('GET', '/api/v0/user/alice/token').get_json()
    assert [t['id'] for t in whole['items']] == [token[0].id, second]
    assert 'next_token' not in whole


def test_one_token_is_shown_without_its_secret(api, token):
    response = api('GET', f'/api/v0/user/alice/token/{token[0].id}')
    assert response.status_code == 200
    body = response.get_json()
    assert body['id'] == token[0].id and body['last4'] == token[1][-4:]
    assert 'token' not in body and 'last_used_at' in body  # this very call used it


def test_a_deactivated_token_stops_working_and_can_be_activated_again(api, alice):
    spare = api('POST', '/api/v0/user/alice/token').get_json()
    url = f'/api/v0/user/alice/token/{spare["id"]}'
    response = api('PATCH', url, {'status': 'inactive'})
    assert response.status_code == 200
    assert (response.get_json()['status'], response.get_json()['version_id']) == ('inactive', 2)
    assert api('GET', '/api/v0/actor', secret=spare['token']).status_code == 401
    assert api('PATCH', url, {'status': 'active'}).get_json()['status'] == 'active'
    assert api('GET', '/api/v0/actor', secret=spare['token']).status_code == 200
    updates = audit('token.update')
    assert [json.loads(r.data)['status']['new'] for r in updates] == ['inactive', 'active']
    assert {r.actor_ip for r in updates} == {IP}


@pytest.mark.parametrize('body, locations', [
    ({}, ['body.status']),
    ({'status': 'on'}, ['body.status']),
    ({'status': True}, ['body.status']),
    ({'status': ['inactive']}, ['body.status']),
    ({'status': 'inactive', 'last4': 'abcd'}, ['body.last4']),
], ids=['missing', 'unknown-status', 'boolean', 'list', 'unknown-field'])
def test_an_invalid_token_patch_is_a_400_and_changes_nothing(api, token, body, locations):
    before = changeable_rows()
    response = api('PATCH', f'/api/v0/user/alice/token/{token[0].id}', body)
    assert response.status_code == 400 and errors_at(response) == locations
    assert changeable_rows() == before


def test_deleting_a_token_answers_with_it_and_frees_its_slot(api, alice):
    spare = api('POST', '/api/v0/user/alice/token').get_json()
    url = f'/api/v0/user/alice/token/{spare["id"]}'
    response = api('DELETE', url)
    assert response.status_code == 200 and response.get_json()['id'] == spare['id']
    assert credentials.Token.get_or_none(credentials.Token.id == spare['id']) is None
    assert api('GET', url).status_code == 404
    assert api('DELETE', url).status_code == 404
    assert api('GET', '/api/v0/actor', secret=spare['token']).status_code == 401
    [record] = audit('token.delete')
    assert record.actor_ip == IP and json.loads(record.data)['token_id'] == spare['id']
    assert api('POST', '/api/v0/user/alice/token').status_code == 201


def test_a_token_can_delete_itself_and_is_dead_at_once(api, token):
    assert api('DELETE', f'/api/v0/user/alice/token/{token[0].id}').status_code == 200
    assert api('GET', '/api/v0/actor').status_code == 401


# Another user's things

def test_another_users_handle_and_objects_are_404(api, bob):
    bobs_token, bobs_secret = credentials.Token.issue(bob)
    workspaces.Workspace.provision(bob, 'bobs')
    before = changeable_rows()
    for method, url, body in [
        ('PATCH', '/api/v0/user/bob', {'display_name': 'Mallory'}),
        ('PATCH', '/api/v0/user/bob', {'handle': 'mallory'}),
        ('DELETE', '/api/v0/user/bob', None),
        ('GET', '/api/v0/user/bob/workspace', None),
        ('GET', '/api/v0/user/bob/password', None),
        ('POST', '/api/v0/user/bob/password', None),
        ('GET', '/api/v0/user/bob/token', None),
        ('POST', '/api/v0/user/bob/token', None),
        ('GET', f'/api/v0/user/bob/token/{bobs_token.id}', None),
        ('PATCH', f'/api/v0/user/bob/token/{bobs_token.id}', {'status': 'inactive'}),
        ('DELETE', f'/api/v0/user/bob/token/{bobs_token.id}', None),
        ('GET', f'/api/v0/user/alice/token/{bobs_token.id}', None),
        ('PATCH', f'/api/v0/user/alice/token/{bobs_token.id}', {'status': 'inactive'}),
        ('DELETE', f'/api/v0/user/alice/token/{bobs_token.id}', None),
        ('GET', '/api/v0/user/bob/preferences', None),
        ('PATCH', '/api/v0/user/bob/preferences', {'communication_tips_and_tricks': 'enabled'}),
        ('GET', '/api/v0/user/bob/audit_log', None),
    ]:
        response = api(method, url, body)
        assert response.status_code == 404, (method, url)
        assert response.get_json()['title'] == 'Not Found'
    assert changeable_rows() == before
    assert credentials.bearer(bobs_secret).status == 'active'


def test_a_handle_nobody_has_looks_the_same_as_someone_elses(api, bob):
    nobody = api('GET', '/api/v0/user/nobody/preferences').get_json()
    somebody = api('GET', '/api/v0/user/bob/preferences').get_json()
    assert {k: v for k, v in nobody.items() if k not in ('detail', 'instance')} == \
        {k: v for k, v in somebody.items() if k not in ('detail', 'instance')}


# Preferences

def test_preferences_show_every_switch(api, alice):
    body = api('GET', '/api/v0/user/alice/preferences').get_json()
    assert body['id'] == 'up_' + alice.id[2:]
    assert {k: v for k, v in body.items() if k.startswith('communication_')} == {
        'communication_community_updates': 'disabled',
        'communication_product_updates': 'enabled',
        'communication_tips_and_tricks': 'disabled'}


def test_patching_preferences_changes_only_the_fields_sent_and_audits_once(api, alice):
    response = api('PATCH', '/api/v0/user/alice/preferences',
                   {'communication_tips_and_tricks': 'enabled',
                    'communication_product_updates': 'enabled'})
    assert response.status_code == 200
    body = response.get_json()
    assert (body['communication_tips_and_tricks'], body['communication_product_updates'],
            body['communication_community_updates']) == ('enabled', 'enabled', 'disabled')
    assert body['version_id'] == 2
    row = models.Preferences.for_user(alice.id)
    assert (row.tips_and_tricks, row.product_updates, row.community_updates) == \
        (True, True, False)
    [record] = audit('user.preferences.update')
    assert json.loads(record.data) == {'communication_tips_and_tricks': 'enabled'}
    assert record.actor_ip == IP


@pytest.mark.parametrize('body, locations', [
    ({'communication_tips_and_tricks': 'yes'}, ['body.communication_tips_and_tricks']),
    ({'communication_tips_and_tricks': True, 'communication_product_updates': 'disabled'},
     ['body.communication_tips_and_tricks']),
    ({'communication_system': 'disabled'}, ['body.communication_system']),
    ({'tips_and_tricks': 'enabled'}, ['body.tips_and_tricks']),
], ids=['not-a-choice', 'boolean', 'system', 'form-name'])
def test_invalid_preferences_are_a_400_and_change_nothing(api, body, locations):
    before = changeable_rows()
    response = api('PATCH', '/api/v0/user/alice/preferences', body)
    assert response.status_code == 400 and errors_at(response) == locations
    assert changeable_rows() == before


# Audit log

def test_the_audit_log_lists_records_newest_first_with_the_actor(api, alice):
    api('PATCH', '/api/v0/user/alice', {'display_name': 'Alice'})
    body = api('GET', '/api/v0/user/alice/audit_log').get_json()
    assert [r['action_type'] for r in body['items']] == [
        'user.update', 'token.create', 'user.signup']
    newest = body['items'][0]
    assert newest['actor_handle'] == 'alice' and newest['actor_ip'] == IP
    assert newest['actor_avatar_url'].endswith(f'/avatars/{alice.id}/1/460.webp')
    assert newest['data'] == {'display_name': {'old': None, 'new': 'Alice'}}
    assert 'next_token' not in body


def test_the_audit_log_can_keep_one_action_type(api):
    api('POST', '/api/v0/user/alice/token')
    body = api('GET', '/api/v0/user/alice/audit_log?action_type=token.create').get_json()
    assert [r['action_type'] for r in body['items']] == ['token.create'] * 2


def add_audit_records(user, count, actor_ids=None):
    """`count` records, two to a second, so that pages must break ties on the id."""
    base = models.utcnow()
    actor_ids = actor_ids or [user.id]
    models.AuditRecord.insert_many([
        dict(id=models.new_id('a'), identity=user.id, identity_handle=user.handle,
             action_type='token.update' if n % 3 else 'user.update',
             actor_id=actor_ids[n % len(actor_ids)], actor_handle='someone', data='{}',
             created_at=base - datetime.timedelta(seconds=1 + n // 2))
        for n in range(count)]).execute()


def test_audit_pages_over_250_records_have_no_gaps_or_repeats(api, alice):
    add_audit_records(alice, 250)
    seen, url, pages = [], '/api/v0/user/alice/audit_log?limit=40', 0
    while url:
        body = api('GET', url).get_json()
        assert len(body['items']) == 40 or 'next_token' not in body
        seen += [record['id'] for record in body['items']]
        pages += 1
        url = ('/api/v0/user/alice/audit_log?limit=40&next_token=' + body['next_token']
               if 'next_token' in body else None)
    expected = [r.id for r in models.AuditRecord.select().where(
        models.AuditRecord.identity == alice).order_by(
        models.AuditRecord.created_at.desc(), models.AuditRecord.id.desc())]
    assert len(expected) == 252 and pages == 7  # 250 + signup + token.create
    assert seen == expected


def test_an_audit_page_costs_the_same_queries_whatever_its_size(api, alice, bob, monkeypatch):
    add_audit_records(alice, 150, actor_ids=[alice.id, bob.id, 'u_gone'])
    statements = []
    execute_sql = database.db.obj.execute_sql

    def counting(sql, *args, **kwargs):
        statements.append(sql)
        return execute_sql(sql, *args, **kwargs)
    api('GET', '/api/v0/actor')  # the token's first use of the minute writes last_used_at
    monkeypatch.setattr(database.db.obj, 'execute_sql', counting)
    small = api('GET', '/api/v0/user/alice/audit_log?limit=3')
    small_count, statements[:] = len(statements), []
    large = api('GET', '/api/v0/user/alice/audit_log?limit=100')
    assert len(small.get_json()['items']) == 3 and len(large.get_json()['items']) == 100
    assert len(statements) == small_count == 3  # the token, the page, its actors
    avatars = {r['actor_id']: r['actor_avatar_url'] for r in large.get_json()['items']}
    assert avatars['u_gone'] == '' and avatars[bob.id].endswith(f'/avatars/{bob.id}/1/460.webp')


# Lists and errors in general

@pytest.mark.parametrize('query', [
    'limit=0', 'limit=101', 'limit=-1', 'limit=1.5', 'limit=ten', 'limit=', 'limit=%C2%B2',
    'limit=0001',
], ids=['zero', 'over-100', 'negative', 'fraction', 'word', 'empty', 'superscript',
        'padded'])
@pytest.mark.parametrize('path', ['token', 'audit_log'])
def test_a_limit_outside_1_to_100_is_a_400(api, path, query):
    response = api('GET', f'/api/v0/user/alice/{path}?{query}')
    assert response.status_code == 400 and errors_at(response) == ['query.limit']


@pytest.mark.parametrize('path', ['token', 'audit_log'])
def test_a_next_token_the_api_did_not_give_out_is_a_400(api, alice, path):
    add_audit_records(alice, 3)
    api('POST', '/api/v0/user/alice/token')
    real = api('GET', f'/api/v0/user/alice/{path}?limit=1').get_json()['next_token']
    payload, _, signature = real.partition('.')
    for forged in ['garbage', payload + '.' + signature[::-1], 'WzEsMl0.' + signature]:
        response = api('GET', f'/api/v0/user/alice/{path}?next_token={forged}')
        assert response.status_code == 400 and errors_at(response) == ['query.next_token']


def test_unknown_paths_and_methods_under_the_api_answer_json(api):
    missing = api('GET', '/api/v0/nothing/here')
    assert missing.status_code == 404 and missing.get_json()['title'] == 'Not Found'
    wrong = api('PUT', '/api/v0/actor')
    assert wrong.status_code == 405
    assert set(wrong.headers['Allow'].split(', ')) == {'GET', 'HEAD', 'OPTIONS'}


def test_every_api_change_writes_exactly_one_record_with_the_ip(api, client, alice):
    log_in(client, 'alice')  # a browser login too: its records are not the API's
    start = len(audit())
    spare = api('POST', '/api/v0/user/alice/token').get_json()['id']
    api('PATCH', f'/api/v0/user/alice/token/{spare}', {'status': 'inactive'})
    api('PATCH', f'/api/v0/user/alice/token/{spare}', {'status': 'inactive'})  # no change
    api('DELETE', f'/api/v0/user/alice/token/{spare}')
    api('PATCH', '/api/v0/user/alice', {'display_name': 'Alice'})
    api('PATCH', '/api/v0/user/alice/preferences', {'communication_product_updates': 'disabled'})
    api('GET', '/api/v0/user/alice/password')
    api('POST', '/api/v0/user/alice/password')
    api('PATCH', '/api/v0/user/alice', {'handle': 'alice'})  # no change
    api('PATCH', '/api/v0/user/alice', {'handle': 'alicia'})
    api('GET', '/api/v0/user/alicia/workspace')
    api('GET', '/api/v0/user/alicia/audit_log')
    records = audit()[start:]
    assert [r.action_type for r in records] == [
        'token.create', 'token.update', 'token.delete', 'user.update',
        'user.preferences.update', 'user.password.rotate', 'user.update']
    assert {(r.actor_ip, r.actor_id, r.identity_id) for r in records} == \
        {(IP, alice.id, alice.id)}


def test_each_token_answers_for_its_own_user(api, app, bob):
    _, secret = credentials.Token.issue(bob)
    assert Api(app, secret)('GET', '/api/v0/actor').get_json()['handle'] == 'bob'
    assert api('GET', '/api/v0/actor').get_json()['handle'] == 'alice'
