"""The JSON API under /api/v0: bearer-token auth, problem-style errors, keyset pages.

The document that describes it is views/openapi.py, served at /api/v0/openapi.json."""
import datetime
import functools
import json
import re

from flask import Blueprint, current_app, g, jsonify, request, url_for
from itsdangerous import BadSignature, URLSafeSerializer
from peewee import Tuple
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

import database
import imaging
import models
from views import avatars, csrf
from views.profile import TOO_LARGE, accepts_upload, limit_uploads

bp = Blueprint('api', __name__, url_prefix='/api/v0')
csrf.exempt(bp)  # bearer tokens, not cookies: a cross-site page cannot send them

PAGE_DEFAULT, PAGE_MAX = 25, 100


class ApiError(Exception):
    """An error answered as SPEC's error object."""

    def __init__(self, status, title, detail='', validation_errors=None, headers=None):
        super().__init__(detail or title)
        self.status, self.title, self.detail = status, title, detail
        self.validation_errors = validation_errors or []
        self.headers = headers or {}


def problem(status, title, detail='', validation_errors=None, headers=None):
    response = jsonify({
        'type': 'about:blank', 'title': title, 'status': status, 'detail': detail,
        'instance': request.path,
        'validation_errors': [{'location': location, 'message': message}
                              for location, message in (validation_errors or [])],
    })
    response.status_code = status
    response.headers.update(headers or {})
    return response


# App-wide, so other blueprints under /api/v0 (CLI login) can raise it too.
@bp.app_errorhandler(ApiError)
def api_error(error):
    return problem(error.status, error.title, error.detail, error.validation_errors,
                   error.headers)


@bp.app_errorhandler(HTTPException)
def http_error(error):
    """Errors under /api/ are JSON, even for paths no route matches; elsewhere, Flask's own."""
    if not request.path.startswith(bp.url_prefix + '/'):
        return error
    methods = getattr(error, 'valid_methods', None)  # a 405 says what is allowed
    return problem(error.code, error.name, error.description,
                   headers={'Allow': ', '.join(methods)} if methods else None)


@bp.after_app_request
def not_stored(response):
    """API answers are one user's data (and once a token secret): no cache may keep them."""
    if request.path.startswith(bp.url_prefix + '/'):
        response.headers['Cache-Control'] = 'no-store'
    return response


def unauthorized():
    """The 401 for a request without a working token (missing, wrong, revoked, expired)."""
    return ApiError(401, 'Unauthorized',
                    'Send a valid, active token as "Authorization: Bearer <token>".',
                    headers={'WWW-Authenticate': 'Bearer'})


def bearer_required(view):
    """Authenticate `Authorization: Bearer <token>`; sets g.api_user and g.api_credential,
    and makes the token the credential this request's writes are checked against."""
    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        scheme, _, secret = request.headers.get('Authorization', '').partition(' ')
        credential = models.bearer(secret.strip()) if scheme.lower() == 'bearer' else None
        if credential is None:
            raise unauthorized()
        database.act_as(credential)
        g.api_credential = credential
        g.api_user = credential.user
        return view(*args, **kwargs)
    return wrapped


def own_handle(handle):
    """Only the token's own user exists here: any other handle is a 404."""
    if handle != g.api_user.handle:
        raise ApiError(404, 'Not Found', f'No user with handle "{handle}".')


def json_body(allowed, optional=False):
    """The request's JSON object, with only `allowed` fields; anything else is a 400.

    Every body the API takes is read here, so none that is malformed reaches a view: not
    UTF-8, not JSON (NaN and Infinity are not JSON either), nested deeper than the parser
    goes, or holding a lone surrogate (a \\uD800 escape without its pair, which no text can
    hold). With `optional`, an empty body counts as `{}`."""
    data = request.get_data()
    if optional and not data:
        return {}
    if not request.is_json:
        raise _malformed('expected a JSON object')
    try:
        body = json.loads(data.decode('utf-8'), parse_constant=_not_json)
    except UnicodeDecodeError:
        raise _malformed('not UTF-8 text') from None
    except RecursionError:
        raise _malformed('nested too deeply') from None
    except json.JSONDecodeError as error:
        raise _malformed(f'not JSON: {error.msg} at line {error.lineno} column {error.colno}'
                         ) from None
    except ValueError as error:  # NaN, Infinity, an integer of thousands of digits
        raise _malformed(f'not JSON: {error}') from None
    if not isinstance(body, dict):
        raise _malformed('expected a JSON object')
    surrogate = _lone_surrogate(body)
    if surrogate:
        raise ApiError(400, 'Bad Request', 'The body holds a lone surrogate, which is not a '
                                           'character: send text as UTF-8.',
                       [(surrogate, 'holds a lone surrogate (an unpaired \\uD800-\\uDFFF '
                                    'escape)')])
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise ApiError(400, 'Bad Request', 'The body has fields this endpoint does not take.',
                       [(f'body.{name}', 'unknown field') for name in unknown])
    return body


def _malformed(message):
    """A 400 for a body that is not a JSON object; `message` says how it is not."""
    return ApiError(400, 'Bad Request',
                    'The body must be a JSON object, sent as Content-Type: application/json.',
                    [('body', message)])


def _not_json(constant):
    """Python's json reads NaN and Infinity; JSON has no such values."""
    raise ValueError(f'{constant} is not a JSON value')


SURROGATE = re.compile('[\ud800-\udfff]')


def _lone_surrogate(body):
    """Where in `body` (`body.<field>`, `[i]` for list items) the first string holding a lone
    surrogate is, or None. A loop, not recursion: the body may be nested as deep as the
    parser went."""
    pending = [('body', body)]
    while pending:
        location, value = pending.pop()
        if isinstance(value, str) and SURROGATE.search(value):
            return location
        if isinstance(value, dict):
            if any(SURROGATE.search(key) for key in value):
                return location
            pending.extend((f'{location}.{key}', item) for key, item in value.items())
        elif isinstance(value, list):
            pending.extend((f'{location}[{index}]', item) for index, item in enumerate(value))
    return None


def _cursor_serializer():
    return URLSafeSerializer(current_app.secret_key, salt='api-next-token')


def encode_cursor(cursor):
    created_at, record_id = cursor
    return _cursor_serializer().dumps([created_at.isoformat(), record_id])


def decode_cursor(token):
    try:
        created_at, record_id = _cursor_serializer().loads(token)
        return datetime.datetime.fromisoformat(created_at), record_id
    except (BadSignature, ValueError, TypeError):
        raise ApiError(400, 'Bad Request', 'next_token is not one this API gave out.',
                       [('query.next_token', 'invalid')]) from None


def invalid(errors):
    """A 400 listing each broken rule of `errors` ({field: message}) at `body.<field>`."""
    return ApiError(400, 'Bad Request', 'The request is not valid: see validation_errors.',
                    [(f'body.{field}', message) for field, message in errors.items()])


def page_args():
    """`limit` (1..100, default 25) and the decoded `next_token` cursor, or a 400."""
    raw = request.args.get('limit', str(PAGE_DEFAULT))
    if not re.fullmatch(r'[0-9]{1,3}', raw) or not 1 <= int(raw) <= PAGE_MAX:
        raise ApiError(400, 'Bad Request', f'limit must be a whole number from 1 to {PAGE_MAX}.',
                       [('query.limit', f'must be 1 to {PAGE_MAX}')])
    token = request.args.get('next_token')
    return int(raw), decode_cursor(token) if token else None


def listing(items, cursor):
    body = {'items': items}
    if cursor is not None:
        body['next_token'] = encode_cursor(cursor)
    return jsonify(body)


def timestamp(value):
    return value.isoformat(timespec='milliseconds') + 'Z' if value else None


def present(fields):
    """Drop the fields without a value: the API leaves them out rather than sending null."""
    return {name: value for name, value in fields.items() if value is not None}


def avatar_url(user):
    return avatars.avatar_url(user, external=True)


def user_json(user):
    return present({
        'id': user.id, 'handle': user.handle, 'display_name': user.display_name or '',
        'avatar_url': avatar_url(user), 'status': user.status,
        'created_at': timestamp(user.created_at), 'updated_at': timestamp(user.updated_at),
        'version_id': user.version_id})


def token_json(token):
    return present({
        'id': token.id, 'user_id': token.user_id, 'status': token.status,
        'last4': token.last4, 'created_at': timestamp(token.created_at),
        'updated_at': timestamp(token.updated_at),
        'last_used_at': timestamp(token.last_used_at), 'version_id': token.version_id})


def workspace_json(workspace, user, password, masked):
    """A workspace, with the user's database `password` shown `masked` in its connection
    string (GET /user/{handle}/password is where the password itself is read)."""
    return present({
        'id': workspace.id, 'identity_id': user.id, 'handle': workspace.handle,
        'host': workspace.host(user.handle), 'database_name': workspace.database_name,
        'connection_string': workspace.connection_string(masked, user.handle),
        'password_status': workspace.password_state(password.version),
        'password_applied_at': timestamp(workspace.password_applied_at),
        'created_at': timestamp(workspace.created_at),
        'updated_at': timestamp(workspace.updated_at), 'version_id': workspace.version_id})


def password_json(password):
    """The database password in plain text, shaped like Steampipe's UserDatabasePassword."""
    return {'$password': password.password, 'id': password.id, 'user_id': password.user_id,
            'created_at': timestamp(password.created_at)}


PREFERENCE_FIELDS = {'communication_' + name: name for name, _, _ in models.Preferences.CHOICES}


def preferences_json(preferences, user):
    """Shaped like Steampipe's UserPreferences. The row is keyed by the user and made with
    the account, so its id is derived from the user's and its creation time is the user's."""
    return present({
        'id': 'up_' + user.id.partition('_')[2], 'created_at': timestamp(user.created_at),
        'updated_at': timestamp(preferences.updated_at), 'version_id': preferences.version_id,
        **{field: 'enabled' if getattr(preferences, name) else 'disabled'
           for field, name in PREFERENCE_FIELDS.items()}})


def actors_of(records):
    """The users who acted in `records`, by id, in one query (for their avatar URLs)."""
    ids = {record.actor_id for record in records if record.actor_id}
    if not ids:
        return {}
    users = models.User.select(models.User.id, models.User.avatar_version) \
        .where(models.User.id.in_(ids))
    return {user.id: user for user in users}


def audit_json(record, actors=None):
    """One audit record; pass `actors` from actors_of() when there are many records."""
    if actors is None:
        actors = actors_of([record])
    actor = actors.get(record.actor_id)
    return present({
        'id': record.id, 'action_type': record.action_type, 'actor_id': record.actor_id or '',
        'actor_handle': record.actor_handle or '',
        'actor_display_name': record.actor_display_name or '',
        'actor_avatar_url': avatar_url(actor) if actor else '',
        'actor_ip': record.actor_ip or '', 'identity_id': record.identity_id,
        'identity_handle': record.identity_handle, 'target_id': record.target_id,
        'target_handle': record.target_handle, 'data': json.loads(record.data),
        'created_at': timestamp(record.created_at)})


@bp.get('/actor')
@bearer_required
def actor():
    """The user the bearer token belongs to."""
    return jsonify(user_json(g.api_user))


@bp.patch('/user/<handle>')
@bearer_required
def update_user(handle):
    """Change the display name and/or the handle; afterwards only the new handle's paths exist."""
    own_handle(handle)
    body = json_body({'display_name', 'handle'})
    wrong = {field: 'must be a string' for field, value in body.items()
             if not isinstance(value, str)}
    if wrong:
        raise invalid(wrong)
    user, ip = g.api_user, request.remote_addr
    new_handle = body.get('handle', handle).strip().lower()
    try:
        # Both or neither: a refused handle undoes the display name changed just before it.
        with database.write_transaction():
            if 'display_name' in body:
                user.set_display_name(body['display_name'], ip)
            if new_handle != user.handle:
                user.change_handle(new_handle, ip)
    except models.Invalid as error:
        raise invalid(error.errors) from None
    return jsonify(user_json(user))


@bp.delete('/user/<handle>')
@bearer_required
def delete_user(handle):
    """Delete the account and everything it owns; answers with the user as it was."""
    own_handle(handle)
    body = user_json(g.api_user)
    g.api_user.delete_account()
    return jsonify(body)


@bp.post('/user/<handle>/avatar')
@bearer_required
@limit_uploads
@accepts_upload
def upload_avatar(handle):
    """Crop an uploaded JPEG or PNG (the centred square unless x, y and size say) and show it."""
    own_handle(handle)
    try:
        file = request.files.get('avatar')
        form = request.form
    except RequestEntityTooLarge:
        raise ApiError(413, 'Content Too Large', TOO_LARGE) from None
    if file is None:
        raise invalid({'avatar': 'send the image as the multipart form field "avatar"'})
    fields = {name: form.get(name, '').strip() for name in ('x', 'y', 'size')}
    box = None
    if any(fields.values()):
        wrong = {name: 'send x, y and size together, or none of them' if not value
                 else 'must be a whole number of pixels'
                 for name, value in fields.items() if not re.fullmatch(r'-?[0-9]{1,9}', value)}
        if wrong:
            raise invalid(wrong)
        box = tuple(int(value) for value in fields.values())
    try:
        images = imaging.avatar(file.read(imaging.UPLOAD_LIMIT + 1), box)
    except imaging.BadImage as bad:
        raise invalid({'avatar': bad.message}) from None
    except imaging.Busy as busy:
        raise ApiError(503, 'Service Unavailable', busy.message,
                       headers={'Retry-After': str(busy.retry_after)}) from None
    models.Avatar.set_custom(g.api_user, images, request.remote_addr)
    return jsonify({'avatar_url': avatar_url(g.api_user)})


@bp.errorhandler(429)
def too_many_requests(error):
    """A rate limit (the avatar upload's) as the error object, in the limit's own words."""
    return problem(429, 'Too Many Requests', error.description)


@bp.delete('/user/<handle>/avatar')
@bearer_required
def reset_avatar(handle):
    """Go back to the default avatar."""
    own_handle(handle)
    models.Avatar.reset(g.api_user, request.remote_addr)
    return jsonify({'avatar_url': avatar_url(g.api_user)})


def oldest_first(query, model, limit, after=None):
    """One page of `query` (over `model`), oldest first, after the (created_at, id) cursor.
    Returns (rows, cursor of the last row or None when there are no more)."""
    if after:
        query = query.where(Tuple(model.created_at, model.id) > Tuple(*after))
    rows = list(query.order_by(model.created_at, model.id).limit(limit + 1))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, ((rows[-1].created_at, rows[-1].id) if more else None)


def own_token(handle, token_id):
    """The token `token_id` of the bearer's own user; anyone else's, or none, is a 404."""
    own_handle(handle)
    token = models.Token.get_or_none((models.Token.id == token_id)
                                     & (models.Token.user == g.api_user.id))
    if token is None:
        raise ApiError(404, 'Not Found', f'No token with id "{token_id}".')
    token.user = g.api_user  # already loaded: the audit record needs it
    return token


@bp.get('/user/<handle>/token')
@bearer_required
def tokens(handle):
    """The user's tokens, oldest first."""
    own_handle(handle)
    limit, after = page_args()
    page, cursor = oldest_first(models.Token.select().where(models.Token.user == g.api_user),
                                models.Token, limit, after)
    return listing([token_json(token) for token in page], cursor)


@bp.post('/user/<handle>/token')
@bearer_required
def create_token(handle):
    """A new token; the only answer that ever holds its secret. 409 at the limit."""
    own_handle(handle)
    json_body(set(), optional=True)
    try:
        token, secret = models.Token.issue(g.api_user, request.remote_addr)
    except models.Refused as refusal:
        raise ApiError(409, 'Conflict', str(refusal)) from None
    response = jsonify({**token_json(token), 'token': secret})
    response.status_code = 201
    response.headers['Location'] = url_for('.token', handle=handle, token_id=token.id)
    return response


@bp.get('/user/<handle>/token/<token_id>')
@bearer_required
def token(handle, token_id):
    """One of the user's tokens."""
    return jsonify(token_json(own_token(handle, token_id)))


@bp.patch('/user/<handle>/token/<token_id>')
@bearer_required
def update_token(handle, token_id):
    """Activate or deactivate a token: `{"status": "active"|"inactive"}`."""
    token = own_token(handle, token_id)
    body = json_body({'status'})
    try:
        token.set_status(body.get('status'), request.remote_addr)
    except models.Invalid as error:
        raise invalid(error.errors) from None
    return jsonify(token_json(token))


@bp.delete('/user/<handle>/token/<token_id>')
@bearer_required
def delete_token(handle, token_id):
    """Delete a token for good; answers with the token as it was."""
    token = own_token(handle, token_id)
    token.remove(request.remote_addr)
    return jsonify(token_json(token))


@bp.get('/user/<handle>/preferences')
@bearer_required
def preferences(handle):
    """Which emails the user wants."""
    own_handle(handle)
    return jsonify(preferences_json(models.Preferences.for_user(g.api_user.id), g.api_user))


@bp.patch('/user/<handle>/preferences')
@bearer_required
def update_preferences(handle):
    """Change some of the email choices; the fields left out stay as they are."""
    own_handle(handle)
    body = json_body(PREFERENCE_FIELDS)
    wrong = {field: 'must be "enabled" or "disabled"' for field, value in body.items()
             if value not in ('enabled', 'disabled')}
    if wrong:
        raise invalid(wrong)
    preferences = models.Preferences.change(
        g.api_user, {PREFERENCE_FIELDS[field]: value == 'enabled'
                     for field, value in body.items()}, request.remote_addr)
    return jsonify(preferences_json(preferences, g.api_user))


@bp.get('/user/<handle>/audit_log')
@bearer_required
def audit_log(handle):
    """The user's audit records, newest first; `action_type` keeps only one kind."""
    own_handle(handle)
    limit, after = page_args()
    records, cursor = models.audit_page(g.api_user, limit, after,
                                        request.args.get('action_type'))
    actors = actors_of(records)
    return listing([audit_json(record, actors) for record in records], cursor)


@bp.get('/user/<handle>/workspace')
@bearer_required
def workspaces(handle):
    """The user's workspaces, oldest first, with the database password masked."""
    own_handle(handle)
    limit, after = page_args()
    query = models.Workspace.select().where(models.Workspace.user == g.api_user)
    page, cursor = oldest_first(query, models.Workspace, limit, after)
    if not page:  # the password is made on first use: not before there is a workspace
        return listing([], cursor)
    password = models.DatabasePassword.for_user(g.api_user)
    masked = password.masked  # decrypted once for the page
    return listing([workspace_json(w, g.api_user, password, masked) for w in page], cursor)


@bp.get('/user/<handle>/password')
@bearer_required
def password(handle):
    """The user's database password, in plain text."""
    own_handle(handle)
    return jsonify(password_json(models.DatabasePassword.for_user(g.api_user)))


@bp.post('/user/<handle>/password')
@bearer_required
def rotate_password(handle):
    """Rotate the database password: 201 with the new one; every workspace gets it shortly."""
    own_handle(handle)
    json_body(set(), optional=True)
    rotated = models.DatabasePassword.rotate(g.api_user, request.remote_addr)
    response = jsonify(password_json(rotated))
    response.status_code = 201
    response.headers['Location'] = url_for('.password', handle=handle)
    return response
