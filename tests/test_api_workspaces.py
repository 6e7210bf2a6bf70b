"""GET /api/v0/user/{handle}/workspace: the user's workspaces, one keyset page at a time,
with the database password masked and its propagation state.

Every answer goes through tests.test_api.Api, which checks it against our OpenAPI document
and against Steampipe's ListWorkspacesResponse (its Workspace on the fields both have)."""
import datetime

import pytest

import credentials
import database
import models
import workspaces
from app import create_app
from tests.conftest import TEST_PASSWORD_KEY
from tests.helpers import Api, errors_at, logged_in_as, make_user, run_jobs

URL = '/api/v0/user/alice/workspace'


def items(response):
    assert response.status_code == 200
    return response.get_json()['items']


def test_a_user_without_workspaces_gets_an_empty_last_page(api):
    body = api('GET', URL).get_json()
    assert body == {'items': []}
    assert workspaces.DatabasePassword.select().count() == 0  # made with the first workspace


def test_each_workspace_has_its_host_database_and_a_masked_connection_string(
        api, alice, workspace_server):
    analytics = workspaces.Workspace.provision(alice, 'analytics')
    password = workspaces.DatabasePassword.for_user(alice)
    response = api('GET', URL)
    [item] = items(response)
    assert item['id'] == analytics.id and item['identity_id'] == alice.id
    assert item['handle'] == 'analytics'
    assert item['host'] == 'alice-analytics.workspaces.penstock.test'
    assert item['database_name'] == analytics.database_name
    assert item['connection_string'] == (
        f'postgresql://alice:{password.masked}@alice-analytics.workspaces.penstock.test:'
        f'{workspace_server.port}/{analytics.database_name}?hostaddr=127.0.0.1')
    assert '*' in item['connection_string']
    assert password.password not in response.get_data(as_text=True)
    # Pending until a worker has made its database; the API leaves out a time it lacks.
    assert item['password_status'] == 'pending' and 'password_applied_at' not in item
    assert item['version_id'] == 1 and 'updated_at' not in item  # never changed: left out
    assert 'next_token' not in response.get_json()

    run_jobs()
    [item] = items(api('GET', URL))
    applied = workspaces.Workspace.get_by_id(analytics.id).password_applied_at
    assert item['password_status'] == 'applied'
    assert item['password_applied_at'] == applied.isoformat(timespec='milliseconds') + 'Z'
    revealed = api('GET', '/api/v0/user/alice/password').get_json()['$password']
    connection_string = item['connection_string'].replace(password.masked, revealed)
    assert logged_in_as(connection_string) == ('alice', analytics.database_name)


def test_workspaces_are_listed_oldest_first_one_page_at_a_time_without_gaps(api, alice):
    opened = [workspaces.Workspace.provision(alice, f'w{n}') for n in range(7)]
    same_second = datetime.datetime(2030, 1, 1, 12, 0, 0)
    for n, workspace in enumerate(opened):  # pairs share a time: pages must break ties on id
        workspaces.Workspace.update(created_at=same_second + datetime.timedelta(seconds=n // 2)) \
            .where(workspaces.Workspace.id == workspace.id).execute()
    Workspace = workspaces.Workspace
    expected = [w.id for w in Workspace.select().where(Workspace.user == alice)
                .order_by(Workspace.created_at, Workspace.id)]
    seen, url, pages = [], URL + '?limit=2', 0
    while url:
        body = api('GET', url).get_json()
        assert len(body['items']) == 2 or 'next_token' not in body
        seen += [item['id'] for item in body['items']]
        pages += 1
        url = f'{URL}?limit=2&next_token={body["next_token"]}' if 'next_token' in body else None
    assert pages == 4 and seen == expected and len(set(seen)) == 7
    assert [item['id'] for item in items(api('GET', URL))] == expected  # default: one page


@pytest.mark.parametrize('query, location', [
    ('limit=0', 'query.limit'), ('limit=101', 'query.limit'), ('limit=two', 'query.limit'),
    ('next_token=forged', 'query.next_token'),
], ids=['zero', 'over-100', 'word', 'forged-next-token'])
def test_a_bad_limit_or_next_token_is_a_400(api, query, location):
    response = api('GET', f'{URL}?{query}')
    assert response.status_code == 400 and errors_at(response) == [location]


def test_a_rotation_shows_pending_until_the_worker_applies_it(api, alice):
    for handle in ('analytics', 'staging'):
        workspaces.Workspace.provision(alice, handle)
    run_jobs()  # their databases are made
    before = {item['id']: item['password_applied_at'] for item in items(api('GET', URL))}
    assert api('POST', '/api/v0/user/alice/password').status_code == 201
    listed = items(api('GET', URL))
    assert [item['password_status'] for item in listed] == ['pending', 'pending']
    assert {item['id']: item['password_applied_at'] for item in listed} == before
    new = workspaces.DatabasePassword.for_user(alice)
    assert all(new.masked in item['connection_string'] for item in listed)

    run_jobs()
    listed = items(api('GET', URL))
    assert [item['password_status'] for item in listed] == ['applied', 'applied']
    assert all(item['password_applied_at'] > before[item['id']] for item in listed)


def test_another_users_workspaces_are_neither_listed_nor_reachable(api, alice, bob):
    mine = workspaces.Workspace.provision(alice, 'shared')
    workspaces.Workspace.provision(bob, 'shared')
    workspaces.Workspace.provision(bob, 'private')
    assert [item['id'] for item in items(api('GET', URL))] == [mine.id]
    response = api('GET', '/api/v0/user/bob/workspace')
    assert response.status_code == 404 and response.get_json()['title'] == 'Not Found'


def test_hosts_and_connection_strings_follow_a_handle_change(api, alice):
    workspaces.Workspace.provision(alice, 'analytics')
    assert api('PATCH', '/api/v0/user/alice', {'handle': 'alicia'}).status_code == 200
    assert api('GET', URL).status_code == 404
    [item] = items(api('GET', '/api/v0/user/alicia/workspace'))
    assert item['host'] == 'alicia-analytics.workspaces.penstock.test'
    assert item['connection_string'].startswith(
        'postgresql://alicia:') and '@alicia-analytics.' in item['connection_string']


def test_hosts_use_the_configured_workspace_domain(database_url, workspace_server):
    app = create_app({'TESTING': True, 'SECRET_KEY': 'x', 'GRAVATAR_ENABLED': False,
                      'DATABASE_URL': database_url,
                      'DATABASE_PASSWORD_KEYS': TEST_PASSWORD_KEY,
                      'WORKSPACE_DOMAIN': 'db.example.net'})
    try:
        database.migrate(database.db.obj)
        user = make_user()
        with database.db.connection_context():
            workspaces.Workspace.provision(user, 'analytics')
            _, secret = credentials.Token.issue(user)
        [item] = items(Api(app, secret)('GET', URL))
        assert item['host'] == 'alice-analytics.db.example.net'
        assert f'@alice-analytics.db.example.net:{workspace_server.port}/' in \
            item['connection_string']
    finally:
        database.db.close()
        models.Config.workspace_domain = 'workspaces.penstock.test'
