"""The OpenAPI 3.1 document of the JSON API, served at /api/v0/openapi.json.

Object shapes follow the Steampipe Cloud API's schemas (SPEC section 9); tests check that
every /api/v0 route is described here and that the answers match these schemas."""
from flask import Blueprint, current_app, jsonify

import credentials
import imaging
import models
from views.api import PAGE_DEFAULT, PAGE_MAX, PREFERENCE_FIELDS, SWITCH
from workspaces import WORKSPACE_HANDLE_RE, Workspace

bp = Blueprint('openapi', __name__, url_prefix='/api/v0')

TIME = {'type': 'string', 'format': 'date-time', 'examples': ['2025-05-01T10:42:07.123Z']}


def public_id(prefix):
    return {'type': 'string', 'pattern': f'^{prefix}_[0-9a-v]{{20}}$'}


def ref(name):
    return {'$ref': f'#/components/schemas/{name}'}


def content(schema):
    return {'application/json': {'schema': schema}}


def ok(description, schema, **extra):
    return {'description': description, 'content': content(schema), **extra}


def errors(*codes):
    """The error answers an operation can give: `codes`, and 503 (any of them can find the
    database busy)."""
    return {str(code): {'$ref': f'#/components/responses/{ERROR_RESPONSES[code][0]}'}
            for code in (*codes, 503)}


def parameters(*names):
    return [{'$ref': f'#/components/parameters/{name}'} for name in names]


def body(schema, description, required=True):
    return {'required': required, 'description': description, 'content': content(schema)}


def listing(item):
    return {'type': 'object', 'required': ['items'], 'additionalProperties': False,
            'properties': {
                'items': {'type': 'array', 'items': ref(item)},
                'next_token': {'type': 'string', 'description':
                               'Present when there are more items: pass it back as '
                               '`next_token` for the next page. Absent on the last page.'}}}


ERROR_RESPONSES = {
    400: ('BadRequest', 'The request is not valid (a field, the body, `limit` or '
                        '`next_token`); `validation_errors` says where and why. Nothing was '
                        'changed.'),
    401: ('Unauthorized', 'No token, or one that is malformed, unknown, inactive, deleted, '
                          'expired or ended by Reset authentication.'),
    403: ('Forbidden', 'The action needs a password: deleting the account, its password in '
                       'the body (missing or wrong); a browser call, the session\'s password '
                       'typed recently (`detail` says where to confirm it). Nothing was '
                       'changed.'),
    404: ('NotFound', "No such object, or another user's: the API never says which."),
    409: ('Conflict', 'The request cannot be done now, for example a third token while the '
                      'user holds two.'),
    413: ('ContentTooLarge', 'The body is larger than the endpoint takes (an avatar upload: '
                             '10 MB for the image and 64 KB for the rest of the form). '
                             'Nothing was changed.'),
    429: ('TooManyRequests', 'Too many requests; try again later.'),
    503: ('ServiceUnavailable', 'The database stayed busy longer than a request waits for it '
                                '(or, for an avatar upload, the server was already decoding '
                                'as many images as it does at once). Nothing was changed; '
                                'send the request again after `Retry-After` seconds.'),
}
RETRY_AFTER = {'Retry-After': {'description': 'Seconds to wait before sending it again.',
                               'schema': {'type': 'integer', 'minimum': 1}}}

SCHEMAS = {
    'Error': {
        'type': 'object', 'description': 'Every error answer (RFC 9457 problem details).',
        'required': ['type', 'title', 'status', 'detail', 'instance', 'validation_errors'],
        'properties': {
            'type': {'type': 'string', 'examples': ['about:blank']},
            'title': {'type': 'string', 'examples': ['Bad Request']},
            'status': {'type': 'integer', 'minimum': 400, 'maximum': 599},
            'detail': {'type': 'string'},
            'instance': {'type': 'string', 'description': 'The path that was asked for.'},
            'validation_errors': {'type': 'array', 'items': ref('ValidationError')}}},
    'ValidationError': {
        'type': 'object', 'required': ['location', 'message'],
        'properties': {
            'location': {'type': 'string', 'examples': ['body.display_name', 'query.limit'],
                         'description': '`body.<field>`, `query.<parameter>` or `body`.'},
            'message': {'type': 'string'}}},
    'User': {
        'type': 'object',
        'required': ['id', 'handle', 'display_name', 'avatar_url', 'status', 'created_at',
                     'version_id'],
        'properties': {
            'id': public_id('u'),
            'handle': {'type': 'string', 'pattern': models.HANDLE_RE.pattern},
            'display_name': {'type': 'string', 'maxLength': models.DISPLAY_NAME_MAX,
                             'description': 'Empty when the user has not set one or cleared it.'},
            'avatar_url': ref('AvatarUrl'),
            'status': {'type': 'string', 'enum': [models.User.status.default]},
            'created_at': TIME,
            'updated_at': {**TIME, 'description': 'Absent until the first change.'},
            'version_id': {'type': 'integer', 'minimum': 1}}},
    'UpdateUserRequest': {
        'type': 'object', 'additionalProperties': False,
        'properties': {
            'display_name': {'type': ['string', 'null'], 'maxLength': models.DISPLAY_NAME_MAX,
                             'description': 'No line breaks or other control characters. '
                             'Leading and trailing spaces are dropped; null, an empty or a '
                             'blank name clears it, and the console shows the handle instead.'},
            'handle': {'type': 'string', 'description':
                       'A new handle: ' + models.HANDLE_RULES + ' Compared without regard '
                       'to case and stored in lowercase. Not reserved, not another user\'s, '
                       'and not one let go by someone else in the last '
                       f'{models.HANDLE_HOLD.days} days. Every workspace host changes with '
                       'it; paths with the old handle are a 404 afterwards. The current '
                       'handle changes nothing.'}}},
    'AvatarUrl': {
        'type': 'string', 'format': 'uri', 'description':
            f'The avatar, a {imaging.LARGE}×{imaging.LARGE} px WebP image served by Penstock. '
            'The URL changes whenever the avatar does, so it may be cached for good; an '
            "earlier avatar's URL redirects to the current one."},
    'Avatar': {
        'type': 'object', 'required': ['avatar_url'], 'additionalProperties': False,
        'properties': {'avatar_url': ref('AvatarUrl')}},
    'AvatarUploadRequest': {
        'type': 'object', 'required': ['avatar'],
        'description': 'Send x, y and size together, or none of them for the largest square '
                       'in the middle of the image. They are in the pixels of the image as '
                       'shown, that is after its EXIF orientation is applied; the square '
                       'must lie inside the image.',
        'properties': {
            'avatar': {'type': 'string', 'contentMediaType': 'application/octet-stream',
                       'description': f'The image file: {imaging.LIMITS} The type is told by '
                                      'the content, not by the file name or Content-Type.'},
            'x': {'type': 'integer', 'minimum': 0,
                  'description': "The crop square's left edge, in pixels."},
            'y': {'type': 'integer', 'minimum': 0,
                  'description': "The crop square's top edge, in pixels."},
            'size': {'type': 'integer', 'minimum': 1,
                     'description': "The crop square's side, in pixels."}}},
    'Token': {
        'type': 'object',
        'required': ['id', 'user_id', 'status', 'last4', 'created_at', 'version_id'],
        'properties': {
            'id': public_id('t'),
            'user_id': public_id('u'),
            'status': {'type': 'string', 'enum': list(credentials.Token.STATUSES)},
            'last4': {'type': 'string', 'pattern': '^[0-9A-Za-z]{4}$',
                      'description': 'The last 4 characters of the secret.'},
            'created_at': TIME,
            'updated_at': {**TIME, 'description': 'Absent until the first change.'},
            'last_used_at': {**TIME, 'description':
                             'Absent when never used; written at most once a minute.'},
            'version_id': {'type': 'integer', 'minimum': 1}}},
    'NewToken': {
        'description': 'A token just created, with its secret: the only time it is shown.',
        'allOf': [ref('Token'), {
            'type': 'object', 'required': ['token'],
            'properties': {'token': {
                'type': 'string', 'pattern': '^pst_[0-9A-Za-z]{36}$',
                'description': '`pst_` + 30 random base62 characters + the 6-character '
                               'base62 CRC32 of everything before it.'}}}]},
    'CreateTokenRequest': {
        'type': 'object', 'additionalProperties': False, 'maxProperties': 0,
        'description': 'No fields: send no body, or `{}`.'},
    'UpdateTokenRequest': {
        'type': 'object', 'additionalProperties': False, 'required': ['status'],
        'properties': {'status': {'type': 'string', 'enum': list(credentials.Token.STATUSES)}}},
    'TokenList': listing('Token'),
    'UserPreferences': {
        'type': 'object',
        'required': ['id', *PREFERENCE_FIELDS, 'created_at', 'version_id'],
        'properties': {
            'id': {'type': 'string', 'pattern': '^up_[0-9a-v]{20}$'},
            **{name: ref('Switch') for name in PREFERENCE_FIELDS},
            'created_at': TIME,
            'updated_at': {**TIME, 'description': 'Absent until the first change.'},
            'version_id': {'type': 'integer', 'minimum': 1}}},
    'Switch': {'type': 'string', 'enum': list(SWITCH)},
    'UpdateUserPreferencesRequest': {
        'type': 'object', 'additionalProperties': False,
        'description': 'Only the fields sent change. System emails are always sent.',
        'properties': {name: ref('Switch') for name in PREFERENCE_FIELDS}},
    'AuditRecord': {
        'type': 'object',
        'required': ['id', 'action_type', 'actor_id', 'actor_handle', 'actor_display_name',
                     'actor_avatar_url', 'actor_ip', 'identity_id', 'identity_handle', 'data',
                     'created_at'],
        'properties': {
            'id': public_id('a'),
            'action_type': ref('ActionType'),
            'actor_id': {'type': 'string'},
            'actor_handle': {'type': 'string', 'description': 'As it was at the time.'},
            'actor_display_name': {'type': 'string'},
            'actor_avatar_url': {'type': 'string', 'description':
                                 'Empty when the actor no longer exists.'},
            'actor_ip': {'type': 'string'},
            'identity_id': public_id('u'),
            'identity_handle': {'type': 'string'},
            'target_id': {'type': 'string', 'description': 'Absent when there is no target.'},
            'target_handle': {'type': 'string'},
            'data': {'type': 'object', 'description': 'What changed, by action type.'},
            'created_at': TIME}},
    'ActionType': {'type': 'string', 'enum': list(models.AUDIT_ACTIONS),
                   'description': 'What happened: '
                                  + '; '.join(f'`{action.name}`, {action.label.lower()}'
                                              for action in models.AUDIT_ACTIONS.values())
                                  + '.'},
    'AuditRecordList': listing('AuditRecord'),
    'Workspace': {
        'type': 'object',
        'required': ['id', 'identity_id', 'handle', 'host', 'database_name',
                     'connection_string', 'password_status', 'created_at', 'version_id'],
        'properties': {
            'id': public_id('w'),
            'identity_id': {**public_id('u'), 'description': 'The user it belongs to.'},
            'handle': {'type': 'string', 'pattern': WORKSPACE_HANDLE_RE.pattern},
            'host': {'type': 'string', 'examples': ['alice-analytics.workspaces.penstock.test'],
                     'description': '`{user handle}-{workspace handle}.{domain}`: it changes '
                                    "when the user's handle does."},
            'database_name': {'type': 'string', 'pattern': '^[a-z][a-z0-9]{7}$'},
            'connection_string': {
                'type': 'string', 'examples': [
                    'postgresql://alice:ab**-****-****-**yz@alice-analytics.workspaces.'
                    'penstock.test:9193/k3x9q2mz'],
                'description': '`postgresql://{user handle}:{password}@{host}:{port}/'
                               '{database name}` with the password masked: read it from '
                               '`GET /user/{handle}/password`. Where the host name does not '
                               "resolve (a local server) it ends in `?hostaddr=` and the "
                               "server's address, so that libpq connects as it is."},
            'password_status': {
                'type': 'string', 'enum': list(Workspace.PASSWORD_STATES), 'description':
                    '`applied` when the workspace accepts the current database password; '
                    '`pending` while a rotation is still on its way to its server (the '
                    'previous password works meanwhile), while a new handle is (the role '
                    'still has the old name), while a new workspace\'s database is '
                    'being made, or while a password set from inside a workspace is being '
                    'put back.'},
            'password_applied_at': {**TIME, 'description':
                                    'When the workspace took the password it accepts now '
                                    '(while `pending`, the previous one); absent while a new '
                                    "workspace's database is being made."},
            'created_at': TIME,
            'updated_at': {**TIME, 'description': 'Absent until the first change.'},
            'version_id': {'type': 'integer', 'minimum': 1}}},
    'WorkspaceList': listing('Workspace'),
    'DeleteUserRequest': {
        'type': 'object', 'additionalProperties': False, 'required': ['password'],
        'properties': {
            'password': {'type': 'string', 'minLength': 1, 'maxLength': models.PASSWORD_MAX,
                         'description': 'The password the account logs in with. Missing or '
                         'wrong: 403, and '
                         'nothing is deleted. A wrong one counts as a failed login, against '
                         'the same allowance as the login page (then 429, with '
                         '`Retry-After`).'}}},
    'UserDatabasePassword': {
        'type': 'object', 'required': ['$password', 'id', 'user_id', 'created_at'],
        'additionalProperties': False,
        'description': "The user's one password for every workspace, in plain text.",
        'properties': {
            '$password': {'type': 'string', 'pattern': '^[a-z0-9]{4}(-[a-z0-9]{4}){3}$'},
            'id': {**public_id('d'), 'description': 'A new id with every rotation.'},
            'user_id': public_id('u'),
            'created_at': {**TIME, 'description': 'When this password was made.'}}},
    'RotatePasswordRequest': {
        'type': 'object', 'additionalProperties': False,
        'description': 'Optional: send no body, or `{}`, to keep open connections.',
        'properties': {
            'end_connections': {
                'type': 'boolean', 'default': False,
                'description': 'Also end every open connection to the workspaces once the new '
                               'password has reached their servers.'}}},
    'LoginRequest': {
        'type': 'object', 'description': 'A CLI login request, to be verified in the browser.',
        'required': ['id', 'status', 'created_at', 'expires_at', 'url'],
        'properties': {
            'id': public_id('l'),
            'status': {'type': 'string', 'enum': ['pending']},
            'created_at': TIME,
            'expires_at': {**TIME, 'description': '15 minutes after creation.'},
            'url': {'type': 'string', 'format': 'uri', 'description':
                    'Where the user verifies it: `/login/token?r={id}`.'}}},
    'ConfirmedLoginRequest': {
        'type': 'object', 'required': ['id', 'status', 'code'],
        'properties': {
            'id': public_id('l'),
            'status': {'type': 'string', 'enum': ['confirmed']},
            'code': {'type': 'string', 'pattern': '^[0-9]{6}$',
                     'description': 'The code the user gives the CLI.'}}},
    'UpdateLoginRequest': {
        'type': 'object', 'additionalProperties': False,
        'description': 'Confirming needs no body; `{"status": "confirmed"}` is accepted.',
        'properties': {'status': {'type': 'string', 'enum': ['confirmed']}}},
    'StartLoginRequest': {
        'type': 'object', 'additionalProperties': False, 'maxProperties': 0,
        'description': 'No fields: send no body, or `{}`.'},
    'TemporaryToken': {
        'type': 'object', 'required': ['token', 'expires_at'],
        'properties': {
            'token': {'type': 'string', 'pattern': '^pstt_[0-9A-Za-z]{36}$',
                      'description': 'Use it as a bearer token until it expires.'},
            'expires_at': {**TIME, 'description': '30 days after it was issued.'}}},
}

PARAMETERS = {
    'Handle': {'name': 'handle', 'in': 'path', 'required': True,
               'description': "The user's handle; any other user's is a 404.",
               'schema': {'type': 'string'}},
    'TokenId': {'name': 'token_id', 'in': 'path', 'required': True,
                'schema': public_id('t')},
    'LoginRequestId': {'name': 'request_id', 'in': 'path', 'required': True,
                       'schema': public_id('l')},
    'Limit': {'name': 'limit', 'in': 'query', 'required': False,
              'description': 'Items per page.',
              'schema': {'type': 'integer', 'minimum': 1, 'maximum': PAGE_MAX,
                         'default': PAGE_DEFAULT}},
    'NextToken': {'name': 'next_token', 'in': 'query', 'required': False,
                  'description': 'The `next_token` of the previous page.',
                  'schema': {'type': 'string'}},
    'ActionType': {'name': 'action_type', 'in': 'query', 'required': False,
                   'description': 'Only records of this action type (any other matches none).',
                   'schema': {'type': 'string', 'examples': list(models.AUDIT_ACTIONS)}},
    'Code': {'name': 'code', 'in': 'query', 'required': True,
             'description': 'The 6-digit code shown in the browser after Verify.',
             'schema': {'type': 'string', 'pattern': '^[0-9]{6}$'}},
    'CsrfToken': {'name': 'X-CSRFToken', 'in': 'header', 'required': True,
                  'description': "The page's CSRF token (browser calls only).",
                  'schema': {'type': 'string'}},
}

SESSION_ONLY = [{'session': []}]
NO_AUTH = []


def operation(operation_id, summary, responses, params=(), request_body=None, security=None,
              tag='Users'):
    op = {'operationId': operation_id, 'summary': summary, 'tags': [tag],
          'responses': responses}
    if params:
        op['parameters'] = parameters(*params)
    if request_body:
        op['requestBody'] = request_body
    if security is not None:
        op['security'] = security
    return op


def creating(operation_id, summary, request, answer, location, codes, tag):
    """A POST under /user/{handle} that takes no fields (`request` names the schema that
    says so) and answers 201 with what it made (`answer`, (description, schema)) and a
    Location header that says what `location` is; `codes` are its error answers."""
    description, schema = answer
    return operation(operation_id, summary, {
        '201': ok(description, schema, headers={'Location': {'description': location,
                                                             'schema': {'type': 'string'}}}),
        **errors(*codes)},
        ['Handle'], body(ref(request), 'No fields.', required=False), tag=tag)


PATHS = {
    '/actor': {
        'get': operation('actor_get', 'The user the token belongs to',
                         {'200': ok('The user.', ref('User')), **errors(401, 429)})},
    '/user/{handle}': {
        'patch': operation(
            'user_update', 'Change the display name or the handle',
            {'200': ok('The user after the change.', ref('User')),
             **errors(400, 401, 404, 429)},
            ['Handle'], body(ref('UpdateUserRequest'), 'Fields to change. Both or neither '
                             'change: a refused handle leaves the display name as it was.')),
        'delete': operation(
            'user_delete', 'Delete the account',
            {'200': ok('The user as it was. Everything the account owned is gone (workspaces, '
                       'database password, tokens, sessions, avatar, audit log); the token '
                       'used is dead. The email address is free at once; the handle is held '
                       f'for {models.HANDLE_HOLD.days} days.', ref('User')),
             **errors(400, 401, 403, 404, 409, 429)},
            ['Handle'], body(ref('DeleteUserRequest'), 'The account password: a token alone '
                             'cannot delete the account.'))},
    '/user/{handle}/password': {
        'get': operation('user_getDBPassword', 'The database password',
                         {'200': ok('The current password, in plain text.',
                                    ref('UserDatabasePassword')),
                          **errors(401, 404, 429)}, ['Handle'], tag='UserDatabasePassword'),
        'post': creating(
            'user_createDBPassword', 'Rotate the database password', 'RotatePasswordRequest',
            ('The new password, in plain text. Each workspace takes it within a couple of '
             'minutes (its `password_status` is `pending` until then); existing connections '
             'are not ended unless `end_connections` is true. At most '
             '`PASSWORD_ROTATIONS_PER_USER` (5 an hour, with the console\'s), then 429.',
             ref('UserDatabasePassword')),
            'Where the password is read.', (400, 401, 404, 429), 'UserDatabasePassword')},
    '/user/{handle}/workspace': {
        'get': operation('userWorkspace_list', 'List workspaces (oldest first)',
                         {'200': ok('A page of workspaces.', ref('WorkspaceList')),
                          **errors(400, 401, 404, 429)},
                         ['Handle', 'Limit', 'NextToken'], tag='UserWorkspaces')},
    '/user/{handle}/avatar': {
        'post': operation(
            'user_uploadAvatar', 'Set the avatar from an uploaded JPEG or PNG',
            {'200': ok('Where the new avatar is (also the `avatar_url` of the user).',
                       ref('Avatar')), **errors(400, 401, 404, 413, 429)},
            ['Handle'], {
                'required': True,
                'description': 'The image, and optionally the square to crop from it. It is '
                               'stored re-encoded from its pixels: no metadata is kept. '
                               "Uploads are counted per user, with the Profile page's: past "
                               '10 a minute the answer is 429.',
                'content': {'multipart/form-data': {
                    'schema': ref('AvatarUploadRequest'),
                    'encoding': {'avatar': {'contentType': 'image/jpeg, image/png'}}}}}),
        'delete': operation(
            'user_deleteAvatar', 'Go back to the default avatar',
            {'200': ok('Where the default avatar is. Deleting when the default is already '
                       'shown changes nothing and answers the same.', ref('Avatar')),
             **errors(401, 404, 429)}, ['Handle'])},
    '/user/{handle}/token': {
        'get': operation('userToken_list', 'List tokens (oldest first)',
                         {'200': ok('A page of tokens.', ref('TokenList')),
                          **errors(400, 401, 404, 429)},
                         ['Handle', 'Limit', 'NextToken'], tag='UserTokens'),
        'post': creating(
            'userToken_create', f'Create a token (at most {credentials.TOKEN_LIMIT} per user)',
            'CreateTokenRequest',
            ('The new token with its secret, `token`, shown this once.', ref('NewToken')),
            'The URL of the new token.', (400, 401, 404, 409, 429), 'UserTokens')},
    '/user/{handle}/token/{token_id}': {
        'get': operation('userToken_get', 'One token',
                         {'200': ok('The token.', ref('Token')),
                          **errors(401, 404, 429)},
                         ['Handle', 'TokenId'], tag='UserTokens'),
        'patch': operation(
            'userToken_update', 'Activate or deactivate a token',
            {'200': ok('The token after the change.', ref('Token')),
             **errors(400, 401, 404, 429)},
            ['Handle', 'TokenId'], body(ref('UpdateTokenRequest'), 'The new status.'),
            tag='UserTokens'),
        'delete': operation('userToken_delete', 'Delete a token',
                            {'200': ok('The deleted token, as it was.', ref('Token')),
                             **errors(401, 404, 429)},
                            ['Handle', 'TokenId'], tag='UserTokens')},
    '/user/{handle}/preferences': {
        'get': operation('user_getPreferences', 'Email preferences',
                         {'200': ok('The preferences.', ref('UserPreferences')),
                          **errors(401, 404, 429)}, ['Handle']),
        'patch': operation(
            'user_updatePreferences', 'Change email preferences',
            {'200': ok('The preferences after the change.', ref('UserPreferences')),
             **errors(400, 401, 404, 429)},
            ['Handle'], body(ref('UpdateUserPreferencesRequest'), 'Switches to change.'))},
    '/user/{handle}/audit_log': {
        'get': operation('user_listAuditLogs', 'Audit records (newest first)',
                         {'200': ok('A page of audit records.', ref('AuditRecordList')),
                          **errors(400, 401, 404, 429)},
                         ['Handle', 'Limit', 'NextToken', 'ActionType'])},
    '/login/token': {
        'post': operation(
            'auth_loginToken_create', 'Start a CLI login request (no authentication)',
            {'201': ok('The pending request; send the user to its `url`.',
                       ref('LoginRequest')), **errors(400, 429)},
            request_body=body(ref('StartLoginRequest'), 'No fields.', required=False),
            security=NO_AUTH, tag='Auth')},
    '/login/token/{request_id}': {
        'get': operation(
            'auth_loginToken_get', 'Exchange the code for a temporary token (no authentication)',
            {'200': ok('The temporary token, given out once.', ref('TemporaryToken')),
             **errors(400, 404, 409, 429)},
            ['LoginRequestId', 'Code'], security=NO_AUTH, tag='Auth'),
        'patch': operation(
            'auth_loginToken_update', 'Verify a login request (browser session and CSRF)',
            {'200': ok('The confirmed request with the `code` to give the CLI.',
                       ref('ConfirmedLoginRequest')), **errors(400, 401, 403, 404, 409, 429)},
            ['LoginRequestId', 'CsrfToken'],
            body(ref('UpdateLoginRequest'), 'Nothing is needed.', required=False),
            security=SESSION_ONLY, tag='Auth'),
        'delete': operation(
            'auth_loginToken_delete', 'Decline a login request (browser session and CSRF)',
            {'204': {'description': 'Declined: the request is gone for good.'},
             **errors(400, 401, 404, 429)},
            ['LoginRequestId', 'CsrfToken'], security=SESSION_ONLY, tag='Auth')},
    '/openapi.json': {
        'get': operation('openapi_get', 'This document',
                         {'200': ok('The OpenAPI document.', {'type': 'object'})},
                         security=NO_AUTH, tag='Meta')},
}

DOCUMENT = {
    'openapi': '3.1.0',
    'info': {
        'title': 'Penstock API',
        'version': '0',
        'description': (
            'The account API of Penstock. Authenticate with `Authorization: Bearer <token>`: '
            'a user token (`pst_…`, made on the Tokens page or by this API) or a temporary '
            'token (`pstt_…`, from CLI login). Cookies do not authenticate it, except the '
            'browser side of CLI login. Errors are problem objects with '
            f'`validation_errors`. Lists take `limit` (1–{PAGE_MAX}, default {PAGE_DEFAULT}) '
            'and `next_token` and return `{"items": [...], "next_token": "..."}`. Fields '
            'without a value are left out, never null.'),
    },
    'servers': [{'url': '/api/v0'}],
    'security': [{'bearer': []}],
    'tags': [{'name': 'Users'}, {'name': 'UserTokens'}, {'name': 'UserDatabasePassword'},
             {'name': 'UserWorkspaces'}, {'name': 'Auth'}, {'name': 'Meta'}],
    'paths': PATHS,
    'components': {
        'schemas': SCHEMAS,
        'parameters': PARAMETERS,
        'responses': {name: ok(description, ref('Error'),
                               **({'headers': RETRY_AFTER} if code == 503 else {}))
                      for code, (name, description) in ERROR_RESPONSES.items()},
        'securitySchemes': {
            'bearer': {'type': 'http', 'scheme': 'bearer', 'bearerFormat':
                       '`pst_` or `pstt_` + 36 base62 characters (30 random + 6 checksum)'},
            'session': {'type': 'apiKey', 'in': 'cookie', 'name': 'penstock_session',
                        'description': 'The browser session; such calls need X-CSRFToken.'},
        },
    },
}


@bp.get('/openapi.json')
def document():
    """The OpenAPI 3.1 document of /api/v0, naming the session cookie as this server does."""
    components = DOCUMENT['components']
    schemes = {**components['securitySchemes']}
    schemes['session'] = {**schemes['session'], 'name': current_app.config['SESSION_COOKIE_NAME']}
    return jsonify({**DOCUMENT, 'components': {**components, 'securitySchemes': schemes}})
