"""What the tests share besides fixtures (those are in conftest.py): acting as a person on
the pages, the API client that checks every answer against both documents, the routes and rows
a request could touch, re-authentication, avatar uploads, and rows made directly in the
database."""
import contextlib
import datetime
import functools
import io
import json
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import jsonschema
import psycopg
from bs4 import BeautifulSoup
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4, DRAFT202012
from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import HTTPException
from werkzeug.routing import AnyConverter, IntegerConverter, Rule
from werkzeug.test import encode_multipart

import addresses
import credentials
import database
import imaging
import models
import propagation
import workspace_servers
from tests.images import encoded, quadrants
from views.openapi import DOCUMENT
from workspaces import DatabasePassword, PropagationJob, Workspace


# Pages and logins

PASSWORD = 'correct horse battery'


def html(response):
    return BeautifulSoup(response.get_data(as_text=True), 'html.parser')


def csrf_token(client, url):
    """The CSRF token a form on `url` carries, as a person's browser would submit it."""
    field = html(client.get(url)).find('input', attrs={'name': 'csrf_token'})
    assert field is not None, f'no CSRF field on {url}'
    return field['value']


HTMX = {'HX-Request': 'true'}


def make_user(email='alice@example.com', handle='alice', password=PASSWORD, verified=True):
    """An account as sign-up makes it; `verified`: with its address verified, as an account
    that has used Penstock for a while has (no verification email is queued either way)."""
    with database.db.connection_context():
        user = models.User.sign_up(email, handle, password)
        return addresses.mark_verified(user) if verified else user


def log_in(client, login, password=PASSWORD):
    token = csrf_token(client, '/login')
    return client.post('/login', data={'email': login, 'password': password,
                                       'csrf_token': token})


# The API: a client that checks every answer against both documents

# The schemas we answer to, cut from ../shared/reference/steampipe-cloud-openapi.yaml
# (tests/reference/README.md says how), so the suite runs from a clone alone.
REFERENCE = Path(__file__).resolve().parent / 'reference' / 'steampipe-cloud-schemas.json'
IP = '203.0.113.7'
# Our operations and the Steampipe Cloud schema each one's success answer must satisfy.
REFERENCE_SHAPES = {
    'actor_get': 'User', 'user_update': 'User',
    'userToken_list': 'ListTokensResponse', 'userToken_create': 'Token',
    'userToken_get': 'Token', 'userToken_update': 'Token', 'userToken_delete': 'Token',
    'user_getPreferences': 'UserPreferences', 'user_updatePreferences': 'UserPreferences',
    'user_listAuditLogs': 'ListAuditLogsResponse', 'user_delete': 'User',
    'user_getDBPassword': 'UserDatabasePassword', 'user_createDBPassword': 'UserDatabasePassword',
    'userWorkspace_list': 'ListWorkspacesResponse',
}


def _regex_formats_as_patterns(node):
    """The reference writes id and handle rules as `format: ^…$`; make them checked."""
    if isinstance(node, dict):
        if str(node.get('format', '')).startswith('^'):
            node['pattern'] = node['format']
        for value in node.values():
            _regex_formats_as_patterns(value)
    elif isinstance(node, list):
        for value in node:
            _regex_formats_as_patterns(value)
    return node


def _overlap_only(reference):
    """Steampipe's Workspace requires fields we have no use for (created_by_id,
    deleted_by_id, desired_state, updated_by_id): ours must satisfy it on the fields both
    have, so only those stay required. Every property both name is still checked."""
    workspace = reference['components']['schemas']['Workspace']
    ours = DOCUMENT['components']['schemas']['Workspace']['properties']
    workspace['required'] = [field for field in workspace['required'] if field in ours]
    assert {'id', 'handle', 'identity_id', 'created_at', 'version_id'} <= set(
        workspace['required'])
    return reference


@functools.cache
def registry():
    with open(REFERENCE) as f:
        reference = _overlap_only(_regex_formats_as_patterns(json.load(f)))
    ours = json.loads(json.dumps(DOCUMENT))  # exactly what the endpoint serves
    return Registry().with_resources([
        ('urn:reference', Resource.from_contents(reference, default_specification=DRAFT4)),
        ('urn:penstock', Resource.from_contents(ours, default_specification=DRAFT202012)),
    ])


def assert_conforms(instance, uri, validator=jsonschema.Draft202012Validator):
    errors = [f'{list(e.absolute_path)}: {e.message}' for e in
              validator({'$ref': uri}, registry=registry()).iter_errors(instance)]
    assert not errors, (uri, errors)


def documented_answer(rule, method, status):
    """The operation our document gives for a route, and its response for `status`."""
    path = re.sub(r'<(?:[^:>]+:)?([^>]+)>', r'{\1}', rule.rule.removeprefix('/api/v0'))
    op = DOCUMENT['paths'][path][method.lower()]
    assert str(status) in op['responses'], f'{method} {path} does not document {status}'
    answer = op['responses'][str(status)]
    if '$ref' in answer:
        answer = DOCUMENT['components']['responses'][answer['$ref'].rsplit('/', 1)[1]]
    return op, answer


class Api:
    """A client that sends a bearer token from IP and checks each answer's shape."""

    def __init__(self, app, secret):
        self.app, self.client, self.secret = app, app.test_client(), secret

    def __call__(self, method, url, body=None, secret=None, **kwargs):
        secret = self.secret if secret is None else secret
        headers = {'Authorization': f'Bearer {secret}'} if secret else {}
        if body is not None:
            kwargs['json'] = body
        response = self.client.open(url, method=method, headers=headers,
                                    environ_base={'REMOTE_ADDR': IP}, **kwargs)
        check_answer(self.app, method, url, response)
        return response


def check_answer(app, method, url, response):
    """The answer is not cached, and has the shapes both documents promise for it."""
    assert response.headers['Cache-Control'] == 'no-store'
    if response.status_code == 204:
        assert response.get_data() == b''
        return
    assert response.mimetype == 'application/json'
    body = response.get_json()
    if response.status_code >= 400:
        assert_conforms(body, 'urn:reference#/components/schemas/ErrorModel',
                        jsonschema.Draft4Validator)
        assert body['status'] == response.status_code and body['instance'] == url.split('?')[0]
    try:
        rule, _ = app.url_map.bind('localhost').match(url.split('?')[0], method,
                                                      return_rule=True)
    except HTTPException:  # no such route or method: only the error shape can be checked
        assert response.status_code in (404, 405)
        return
    op, answer = documented_answer(rule, method, response.status_code)
    if 'content' not in answer:
        return
    assert_conforms(body, 'urn:penstock' + answer['content']['application/json']['schema']['$ref'])
    if response.status_code < 400 and op['operationId'] in REFERENCE_SHAPES:
        assert_conforms(body, 'urn:reference#/components/schemas/'
                        + REFERENCE_SHAPES[op['operationId']], jsonschema.Draft4Validator)


def audit(action_type=None):
    query = models.AuditRecord.select().order_by(models.AuditRecord.created_at)
    if action_type:
        query = query.where(models.AuditRecord.action_type == action_type)
    return list(query)


def errors_at(response):
    return [error['location'] for error in response.get_json()['validation_errors']]


def changeable_rows():
    """Every row a request could change; a token's last use is not a change."""
    def rows(model):
        fields = [f for f in model._meta.sorted_fields if f.name != 'last_used_at']
        return sorted(tuple(map(str, row)) for row in model.select(*fields).tuples())
    return {model.__name__: rows(model)
            for model in (models.User, models.Preferences, credentials.Token, models.AuditRecord,
                          Workspace, DatabasePassword, PropagationJob,
                          models.HandleHold)}


# Every route, and every row it could change

UNSAFE = {'POST', 'PUT', 'PATCH', 'DELETE'}


def state_changing_routes(app, values=None):
    """Every (method, rule, URL) in the url_map that can change state, arguments filled."""
    return routes_of(app, UNSAFE, values)


def routes_of(app, methods, values=None):
    """Every (method, rule, URL) in the url_map answering one of `methods`, arguments filled."""
    routes = []
    for rule in app.url_map.iter_rules():
        for method in sorted((rule.methods or set()) & methods):
            routes.append((method, rule.rule, build(rule, values or {})))
    return routes


def build(rule: Rule, values):
    def value(arg):
        converter = rule._converters.get(arg)
        if values.get(arg):
            return values[arg]
        if arg == 'handle':
            return 'alice'
        if isinstance(converter, IntegerConverter):
            return 1
        if isinstance(converter, AnyConverter):
            return sorted(converter.items)[0]
        return 'x_' + arg
    return rule.build({arg: value(arg) for arg in rule.arguments}, append_unknown=False)[1]


def every_row():
    """Every row of every table (enumerated, so a new table is watched too)."""
    with database.db.connection_context():
        return {model.__name__: [tuple(row) for row in model.select().tuples()
                                 .order_by(*model._meta.sorted_fields)]
                for model in every_model()}


def real_objects(user):
    """Ids of a real token, workspace, other browser session and pending CLI login request,
    so a forged call could land."""
    with database.db.connection_context():
        alice = models.User.get_by_id(user.id)
        token, _ = credentials.Token.issue(alice)
        workspace = Workspace.provision(alice, 'analytics')
        session = credentials.Session.sign_in(alice, '192.0.2.9', 'Another browser')
        login_request = credentials.LoginRequest.start('192.0.2.1')
    return {'token_id': token.id, 'request_id': login_request.id,
            'workspace_id': workspace.id, 'session_id': session.id}


# Re-authentication: a session whose password was typed too long ago

STALE = credentials.RECENT_LOGIN + datetime.timedelta(minutes=1)


def make_stale(user):
    """The password was last typed longer ago than RECENT_LOGIN."""
    with database.db.connection_context():
        long_ago = models.utcnow() - STALE
        credentials.Session.update(authenticated_at=long_ago, created_at=long_ago).where(
            credentials.Session.user == user.id).execute()


def reauth_next(location):
    """The `next` of a /reauth?next=… address (asserting that is where it leads)."""
    parts = urlsplit(location)
    assert parts.path == '/reauth'
    return parse_qs(parts.query)['next'][0]


def reauthenticate(client, location, password):
    """Answer the /reauth page at `location` with `password`, through its own form."""
    page = html(client.get(location))
    form = page.find('form', action='/reauth')
    data = {field['name']: field.get('value', '') for field in form.find_all('input')}
    data['password'] = password
    return client.post(form['action'], data=data)


# Avatars: uploading as a person would, and what a page offers

PROFILE = '/user/alice/settings/profile'
TOO_MANY_UPLOADS = 'You have sent many images in a short time. Wait a minute, then try again.'
UPRIGHT = quadrants(1200, 800)
PHOTO = encoded(UPRIGHT, 'JPEG', quality=95)


def send_form(client, url, fields, headers=None):
    """POST `fields` as multipart/form-data, the body made in memory: the test client would
    spool a large one to a temporary file that nothing closes."""
    boundary, body = encode_multipart(fields)
    return client.post(url, data=body, content_type=f'multipart/form-data; boundary={boundary}',
                       headers=headers or {})


def upload(client, data=PHOTO, filename='photo.png', headers=None, page=PROFILE):
    """Choose a file for Change avatar and send the form."""
    return send_form(client, page + '/avatar', {
        'avatar': FileStorage(io.BytesIO(data), filename, content_type='image/png'),
        'csrf_token': csrf_token(client, page)}, headers)


def reference_in(response):
    """The signed upload reference a no-JS upload redirects with."""
    return parse_qs(urlsplit(response.headers['Location']).query)['upload'][0]


def crop_step(client, page=PROFILE):
    """Upload without JavaScript and open the crop step; returns (reference, its page)."""
    response = upload(client, page=page)
    assert response.status_code == 303
    step = client.get(response.headers['Location'])
    assert step.status_code == 200
    return reference_in(response), step


def offered(img):
    """The images an avatar <img> offers: {'src': URL} and its srcset as {'1x': URL, ...}."""
    images = {'src': img['src']}
    for candidate in filter(str.strip, img.get('srcset', '').split(',')):
        url, density = candidate.split()
        images[density] = url
    return images


@contextlib.contextmanager
def every_turn_taken(monkeypatch):
    """As while other images take every turn to decode: one more is answered "busy" at once."""
    monkeypatch.setattr(imaging, 'DECODE_WAIT', 0)
    with contextlib.ExitStack() as held:
        for _ in range(imaging.DECODES_AT_ONCE):
            held.enter_context(imaging.turn())
        yield


# Credentials and workspaces made directly in the database

def temporary_token(user):
    """An API credential that leaves both of the user's token slots free."""
    secret = credentials.Token.new_secret('pstt_')
    credentials.TemporaryToken.create(user=user, token_hash=models.sha256(secret),
                                      expires_at=models.utcnow() + datetime.timedelta(days=1))
    return secret


LEASE = datetime.timedelta(seconds=30)  # how long a propagation worker holds a job it took


def run_jobs(servers=None):
    """Carry out every due propagation job, as a worker would, on the configured workspace
    servers (the run's real one) or on `servers`; returns how many it took on."""
    taken = 0
    with database.db.connection_context():
        while propagation.run_once(servers or models.Config.workspace_servers, LEASE):
            taken += 1
    return taken


def logged_in_as(connection_string):
    """(user, database) that `connection_string` logs in to the workspace server as, with
    psycopg as it is (host name, port, hostaddr= and all)."""
    with psycopg.connect(connection_string, connect_timeout=5) as connection:
        return connection.execute('SELECT current_user, current_database()').fetchone()


@contextlib.contextmanager
def user_locked(url, user_id):
    """Hold `user_id`'s lock on the workspace server at admin URL `url` (the one
    Server.holding takes) from a connection of its own: a worker that takes the user's job
    waits in the middle of it, before reading what to converge, until this ends."""
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute('SELECT pg_advisory_lock(%s, hashtext(%s))',
                           (workspace_servers.LOCK_NAMESPACE, user_id))
        yield


def waiting_for_a_user_lock(url):
    """Whether a session on the workspace server at `url` waits for a user's lock."""
    with psycopg.connect(url, autocommit=True) as connection:
        return connection.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND classid = %s", (workspace_servers.LOCK_NAMESPACE,)).fetchone()[0] > 0


def provision_and_rotate(user, *handles, rotations=1):
    """The user's workspaces `handles`, then `rotations` rotations of the password."""
    with database.db.connection_context():
        alice = models.User.get_by_id(user.id)
        workspaces = [Workspace.provision(alice, handle) for handle in handles]
        for _ in range(rotations):
            DatabasePassword.rotate(alice)
    return workspaces


def every_model():
    """Every model with a table: the leaves under models.BaseModel (models.Owned, the base of
    Token and Workspace, has none)."""
    found, bases = [], [models.BaseModel]
    while bases:
        subclasses = bases.pop().__subclasses__()
        bases += subclasses
        found += [model for model in subclasses if not model.__subclasses__()]
    return found
