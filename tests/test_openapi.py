"""The OpenAPI 3.1 document at /api/v0/openapi.json: valid, complete, and true to the routes."""
import copy
import re

import jsonschema
import pytest
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError
from referencing.exceptions import PointerToNowhere

import credentials
import database
import models
from tests.conftest import SESSION_COOKIE
from tests.helpers import REFERENCE_SHAPES, check_answer, csrf_token, log_in, make_stale

IGNORED_METHODS = {'HEAD', 'OPTIONS'}


@pytest.fixture
def document(client):
    response = client.get('/api/v0/openapi.json')
    assert response.status_code == 200 and response.mimetype == 'application/json'
    return response.get_json()


def documented_path(rule):
    """`/api/v0/user/<handle>/token/<token_id>` → `/user/{handle}/token/{token_id}`."""
    return re.sub(r'<(?:[^:>]+:)?([^>]+)>', r'{\1}', rule.rule.removeprefix('/api/v0'))


def api_routes(app):
    """{documented path: {methods}} for every /api/v0 rule in the url_map."""
    routes = {}
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith('/api/v0/'):
            routes.setdefault(documented_path(rule), set()).update(
                method.lower() for method in rule.methods - IGNORED_METHODS)
    return routes


def operations(document):
    for path, item in document['paths'].items():
        for method, op in item.items():
            yield path, method, op


def test_the_document_is_valid_openapi_3_1(document):
    assert document['openapi'] == '3.1.0'
    validate(document)


@pytest.mark.parametrize('spoil, error', [
    (lambda d: d['components']['schemas'].pop('Token'), PointerToNowhere),
    (lambda d: d['paths']['/actor']['get'].update(operationId='userToken_get'),
     OpenAPIValidationError),
    (lambda d: d['components']['schemas']['User'].update(type='record'),
     OpenAPIValidationError),
], ids=['dangling-ref', 'duplicate-operation-id', 'bad-type'])
def test_the_validator_would_notice_a_broken_document(document, spoil, error):
    broken = copy.deepcopy(document)
    spoil(broken)
    with pytest.raises(error):
        validate(broken)


def test_every_api_route_is_described_with_its_methods(app, document):
    routes = api_routes(app)
    assert '/user/{handle}/token/{token_id}' in routes  # the enumeration sees the API
    for path, methods in routes.items():
        assert path in document['paths'], f'{path} is not in the OpenAPI document'
        assert set(document['paths'][path]) == methods, path


def test_the_document_describes_no_route_that_does_not_exist(app, document):
    routes = api_routes(app)
    for path, item in document['paths'].items():
        assert set(item) == routes.get(path, set()), f'{path} has no route for {set(item)}'


def test_path_parameters_match_the_route_arguments(app, document):
    parameters = document['components']['parameters']
    for path, _, op in operations(document):
        declared = {parameters[p['$ref'].rsplit('/', 1)[1]]['name']
                    for p in op.get('parameters', [])
                    if parameters[p['$ref'].rsplit('/', 1)[1]]['in'] == 'path'}
        assert declared == set(re.findall(r'{([^}]+)}', path)), path


# Operations whose answers have no Steampipe Cloud counterpart to be checked against.
OURS_ONLY = {'user_uploadAvatar', 'user_deleteAvatar', 'openapi_get'}


def test_every_answer_with_a_body_is_checked_against_a_steampipe_schema(document):
    """A new operation must name its Steampipe schema in tests/test_api.py (or be ours)."""
    for path, method, op in operations(document):
        if op['tags'] == ['Auth'] or op['operationId'] in OURS_ONLY:
            continue
        success = [answer for status, answer in op['responses'].items() if status < '300']
        if any('content' in answer for answer in success):
            assert op['operationId'] in REFERENCE_SHAPES, (path, method)
    assert {'user_delete', 'user_getDBPassword', 'user_createDBPassword',
            'userWorkspace_list'} <= set(REFERENCE_SHAPES)


def test_every_error_answer_is_the_error_object(document):
    responses = document['components']['responses']
    for path, method, op in operations(document):
        for status, answer in op['responses'].items():
            if int(status) >= 400:
                name = answer['$ref'].rsplit('/', 1)[1]
                schema = responses[name]['content']['application/json']['schema']
                assert schema == {'$ref': '#/components/schemas/Error'}, (path, method, status)
            assert document['paths'][path][method]['operationId']


def test_every_operation_may_answer_503_with_retry_after(document):
    busy = document['components']['responses']['ServiceUnavailable']
    assert set(busy['headers']) == {'Retry-After'}
    for path, method, op in operations(document):
        if op['responses'].keys() == {'200'}:  # this document: served without the database
            continue
        assert op['responses']['503'] == {
            '$ref': '#/components/responses/ServiceUnavailable'}, (path, method)


def test_operations_without_a_token_are_only_cli_login_and_this_document(document):
    open_or_cookie = {(path, method) for path, method, op in operations(document)
                      if 'security' in op}
    assert open_or_cookie == {
        ('/login/token', 'post'), ('/login/token/{request_id}', 'get'),
        ('/login/token/{request_id}', 'patch'), ('/login/token/{request_id}', 'delete'),
        ('/openapi.json', 'get')}
    assert document['security'] == [{'bearer': []}]


def test_every_bearer_operation_answers_401_without_a_token(app, user, document):
    with database.db.connection_context():
        token, _ = credentials.Token.issue(models.User.get_by_id(user.id))
    client = app.test_client()
    for path, method, op in operations(document):
        if 'security' in op:
            continue
        url = '/api/v0' + path.format(handle='alice', token_id=token.id)
        response = client.open(url, method=method.upper())
        assert response.status_code == 401, (method, path)
        assert '401' in op['responses']


def test_the_document_names_the_session_cookie_this_server_sets(client, user, document):
    names = [cookie.split('=', 1)[0]
             for cookie in log_in(client, 'alice').headers.getlist('Set-Cookie')]
    assert document['components']['securitySchemes']['session']['name'] == SESSION_COOKIE
    assert SESSION_COOKIE in names


def test_the_document_needs_no_token_and_is_not_cached(client):
    response = client.get('/api/v0/openapi.json')
    assert response.status_code == 200
    assert response.headers['Cache-Control'] == 'no-store'


def test_cli_login_answers_match_the_document(app, client, user):
    """The CLI login endpoints, browser side and CLI side: the document must tell their truth."""
    cli = app.test_client()

    def call(who, method, url, **kwargs):
        response = who.open(url, method=method, **kwargs)
        check_answer(app, method, url, response)
        return response

    started = call(cli, 'POST', '/api/v0/login/token')
    assert started.status_code == 201
    request_id = started.get_json()['id']
    log_in(client, 'alice')
    csrf = {'X-CSRFToken': csrf_token(client, '/user/alice/settings/profile')}
    assert call(client, 'PATCH', f'/api/v0/login/token/{request_id}').status_code == 400
    confirmed = call(client, 'PATCH', f'/api/v0/login/token/{request_id}', headers=csrf)
    assert confirmed.status_code == 200
    code = confirmed.get_json()['code']
    wrong = f'{(int(code) + 1) % 10 ** 6:06d}'
    assert call(cli, 'GET', f'/api/v0/login/token/{request_id}?code={wrong}').status_code == 400
    exchanged = call(cli, 'GET', f'/api/v0/login/token/{request_id}?code={code}')
    assert exchanged.status_code == 200
    assert call(cli, 'GET', f'/api/v0/login/token/{request_id}?code={code}').status_code == 404

    declined_id = call(cli, 'POST', '/api/v0/login/token').get_json()['id']
    assert call(cli, 'DELETE', f'/api/v0/login/token/{declined_id}').status_code == 401
    assert call(client, 'DELETE', f'/api/v0/login/token/{declined_id}',
                headers=csrf).status_code == 204
    assert call(client, 'DELETE', f'/api/v0/login/token/{declined_id}',
                headers=csrf).status_code == 404

    make_stale(user)
    stale_id = call(cli, 'POST', '/api/v0/login/token').get_json()['id']
    assert call(client, 'PATCH', f'/api/v0/login/token/{stale_id}',
                headers=csrf).status_code == 403


def test_the_user_patch_body_lets_the_display_name_be_cleared(document):
    """null, "" and a blank name clear the display name (the console then shows the handle);
    the document must say so, and still refuse what the API refuses."""
    body = document['paths']['/user/{handle}']['patch']['requestBody']['content'][
        'application/json']['schema']
    assert body == {'$ref': '#/components/schemas/UpdateUserRequest'}
    schema = document['components']['schemas']['UpdateUserRequest']
    validator = jsonschema.Draft202012Validator(schema)
    for accepted in [{'display_name': None}, {'display_name': ''}, {'display_name': '  '},
                     {'display_name': 'Alice'}, {'handle': 'alicia'}]:
        assert validator.is_valid(accepted), accepted
    for refused in [{'display_name': 5}, {'display_name': 'x' * 101}, {'handle': None},
                    {'email': 'a@example.com'}]:
        assert not validator.is_valid(refused), refused
    assert 'clears' in schema['properties']['display_name']['description']
