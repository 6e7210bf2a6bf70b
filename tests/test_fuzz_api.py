"""schemathesis against /api/v0/openapi.json on a live server: no 5xx, every answer as documented.

Each operation of the document is fuzzed on a fresh app, with a real user, token, workspace and
audit records behind it, so generated requests reach the handlers rather than a 404. Examples
are derandomized (the same requests every run) and few, to keep the run to about a minute.
schemathesis only writes well-formed JSON in UTF-8, so hypothesis also sends every operation
that takes a body what it never would: bodies nested past the parser, bytes that are not UTF-8,
NaN, and strings holding lone surrogates, controls and unassigned code points."""
import json

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings, strategies as st
from schemathesis import GenerationMode

import credentials
import database
import workspaces
from tests.helpers import csrf_token, log_in, make_user
from views.openapi import PATHS, SCHEMAS

pytestmark = pytest.mark.slow  # schemathesis fuzzing

OPERATIONS = [(method.upper(), path, operation) for path, operations in PATHS.items()
              for method, operation in operations.items()
              if method in {'get', 'post', 'patch', 'put', 'delete'}]
# An invalid request needs something to get wrong: a parameter, a body or a credential.
CASES = [pytest.param(method, path, mode, id=f'{method} {path} {label}')
         for method, path, operation in OPERATIONS
         for mode, label in ((GenerationMode.POSITIVE, 'valid'), (GenerationMode.NEGATIVE, 'invalid'))
         if mode is GenerationMode.POSITIVE or operation.get('parameters')
         or operation.get('requestBody') or operation.get('security') != []]
EXAMPLES = 12
# Valid by the document yet refused by the server is expected where a rule cannot be written
# as JSON Schema: a signed next_token, the contents of an image, a reserved or held handle.
NOT_EXPRESSIBLE = [schemathesis.checks.positive_data_acceptance]


@pytest.fixture
def api_token(app):
    """Alice's bearer token, with a workspace, a second token and audit records to list."""
    alice = make_user()
    with database.db.connection_context():
        _, secret = credentials.Token.issue(alice)
        other, _ = credentials.Token.issue(alice)
        workspaces.Workspace.provision(alice, 'analytics')
        alice.set_display_name('Alice')
    return {'secret': secret, 'token_id': other.id}


@pytest.mark.parametrize(('method', 'path', 'mode'), CASES)
def test_the_api_answers_fuzzed_requests_as_its_document_says(server, api_token, method, path,
                                                              mode):
    """schemathesis's checks: no 5xx; status, content type, headers and body as documented;
    a request the document says is invalid is refused with a 4xx."""
    schema = schemathesis.openapi.from_url(f'{server}/api/v0/openapi.json', timeout=10)
    operation = schema[path][method]
    # Alice and her token, so requests reach the handlers; another user's handles and ids
    # (a 404) are checked by the security sweep and the API tests.
    known = {'handle': 'alice', 'token_id': api_token['token_id']}
    names = {parameter.name for parameter in operation.path_parameters}
    strategy = operation.as_strategy(
        mode, path_parameters={name: value for name, value in known.items() if name in names})
    headers = {'Authorization': f'Bearer {api_token["secret"]}'}

    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def answers_as_documented(case):
        case.call_and_validate(base_url=f'{server}/api/v0', headers=headers, timeout=10,
                               excluded_checks=NOT_EXPRESSIBLE)

    answers_as_documented()


BODY_OPERATIONS = [(method, path, operation) for method, path, operation in OPERATIONS
                   if 'requestBody' in operation]
# Text holding at least one character no text field takes (a lone surrogate among them: JSON
# can carry one as a \\uD800 escape, which json.dumps writes).
HOSTILE_TEXT = st.tuples(st.text(max_size=5), st.characters(categories=[
    'Cs', 'Cc', 'Cf', 'Co', 'Cn', 'Zl', 'Zp']), st.text(max_size=5)).map(''.join)
JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | HOSTILE_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(HOSTILE_TEXT, inner, max_size=3),
    max_leaves=8)
DEEP = st.tuples(st.sampled_from([b'[', b'{"a":', b'[{"a":']), st.integers(1_000, 60_000)).map(
    lambda drawn: drawn[0] * drawn[1])


def fields_of(operation):
    """The fields of an operation's body, as its document names them."""
    schema = next(iter(operation['requestBody']['content'].values()))['schema']
    if '$ref' in schema:
        schema = SCHEMAS[schema['$ref'].rpartition('/')[2]]
    return sorted(schema.get('properties', {}))


def hostile_body(fields):
    """A JSON body that is malformed or holds a value no field takes; or bytes (maybe JSON)."""
    objects = st.dictionaries(st.sampled_from(fields) if fields else HOSTILE_TEXT,
                              HOSTILE_TEXT | JSON_VALUE, min_size=1, max_size=3)
    refused = st.one_of(objects, JSON_VALUE.filter(lambda value: not isinstance(value, dict)))
    return st.one_of(refused.map(lambda value: (True, json.dumps(value).encode())),
                     DEEP.map(lambda body: (True, body)),
                     st.binary(max_size=40).map(lambda body: (False, body)))


@pytest.mark.parametrize(('method', 'path'),
                         [(method, path) for method, path, _ in BODY_OPERATIONS],
                         ids=[f'{method} {path}' for method, path, _ in BODY_OPERATIONS])
def test_every_body_the_api_takes_refuses_malformed_json_with_the_error_model(app, api_token,
                                                                              method, path):
    """Never a 5xx; a JSON body that is malformed or holds a refused value is a 400 with the
    error model saying where (the avatar upload takes a form, so any 4xx of its own)."""
    operation = PATHS[path][method.lower()]
    takes_json = 'application/json' in operation['requestBody']['content']
    client = app.test_client()
    log_in(client, 'alice')  # the browser side of CLI login is a session's
    with database.db.connection_context():
        request_id = credentials.LoginRequest.start('192.0.2.1').id
    headers = {'Authorization': f'Bearer {api_token["secret"]}',
               'X-CSRFToken': csrf_token(client, '/user/alice/settings/profile')}
    url = '/api/v0' + path.format(handle='alice', token_id=api_token['token_id'],
                                  request_id=request_id)

    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(drawn=hostile_body(fields_of(operation)))
    def refused_with_the_error_model(drawn):
        malformed, body = drawn
        response = client.open(url, method=method, data=body, headers=headers,
                               content_type='application/json')
        assert response.status_code < 500, (body[:80], response.status_code)
        if response.status_code >= 400:
            answer = response.get_json()
            assert answer['status'] == response.status_code and answer['detail'], body[:80]
        if malformed and takes_json:
            assert response.status_code == 400, (body[:80], response.status_code)
            assert answer['validation_errors'], body[:80]

    refused_with_the_error_model()
