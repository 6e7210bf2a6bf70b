"""The JSON API under /api/v0: bearer-token auth, problem-style errors, keyset pages, and
CLI login's endpoints (the CLI starts a request and trades its code for a temporary token; the
browser side verifies or declines it with the session and the page's CSRF token).

The document that describes it is views/openapi.py, served at /api/v0/openapi.json."""
import functools
import json
import re

from flask import Blueprint, g, jsonify, request, url_for
from flask_login import current_user
from flask_wtf.csrf import ValidationError, validate_csrf
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge, TooManyRequests

import credentials
import database
import imaging
import models
import throttle
from views import (
    audit_json,
    avatars,
    csrf,
    decode_cursor,
    encode_cursor,
    limiter,
    present,
    timestamp,
)
from views.profile import TOO_LARGE, accepts_upload, count_rotation, limit_uploads
from workspaces import DatabasePassword, Workspace

bp = Blueprint('api', __name__, url_prefix='/api/v0')
csrf.exempt(bp)  # bearer tokens, not cookies: a cross-site page cannot send them

PAGE_DEFAULT, PAGE_MAX = 25, 100
PASSWORD_NEEDED = ('Deleting the account needs its password: send {"password": "…"} in the '
                   'body. A token alone cannot delete it.')
PASSWORD_WRONG = 'The password is wrong, so nothing was deleted.'
TOO_MANY_LOOKUPS = ('Many of the handles looked up from this account or network were taken, so '
                    'this one was not looked up and nothing was changed. Wait for the time '
                    'Retry-After gives, then try again.')
TOO_MANY_PASSWORDS = ('Too many wrong passwords for this account (here and at login), so this '
                      'one was not checked and nothing was deleted. Wait for the time '
                      'Retry-After gives, then try again.')


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


# App-wide, so that app.py's handlers can answer with it too.
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
        credential = credentials.bearer(secret.strip()) if scheme.lower() == 'bearer' else None
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
    after = decode_cursor(token) if token else None
    if token and after is None:
        raise ApiError(400, 'Bad Request', 'next_token is not one this API gave out.',
                       [('query.next_token', 'invalid')])
    return int(raw), after


def own_page(handle, model):
    """One page of the bearer's own `model` rows (a models.Owned), as `limit` and
    `next_token` ask: (rows, cursor)."""
    own_handle(handle)
    return model.page(g.api_user, *page_args())


def listing(items, cursor):
    body = {'items': items}
    if cursor is not None:
        body['next_token'] = encode_cursor(cursor)
    return jsonify(body)


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
        'password_status': workspace.password_state(password.version, user.handle),
        'password_applied_at': timestamp(workspace.password_applied_at),
        'created_at': timestamp(workspace.created_at),
        'updated_at': timestamp(workspace.updated_at), 'version_id': workspace.version_id})


def password_json(password):
    """The database password in plain text, shaped like Steampipe's UserDatabasePassword."""
    return {'$password': password.password, 'id': password.id, 'user_id': password.user_id,
            'created_at': timestamp(password.created_at)}


PREFERENCE_FIELDS = {'communication_' + name: name for name, _, _ in models.Preferences.CHOICES}
SWITCH = ('enabled', 'disabled')  # what a preference says: on, off


def preferences_json(preferences, user):
    """Shaped like Steampipe's UserPreferences. The row is keyed by the user and made with
    the account, so its id is derived from the user's and its creation time is the user's."""
    return present({
        'id': 'up_' + user.id.partition('_')[2], 'created_at': timestamp(user.created_at),
        'updated_at': timestamp(preferences.updated_at), 'version_id': preferences.version_id,
        **{field: 'enabled' if getattr(preferences, name) else 'disabled'
           for field, name in PREFERENCE_FIELDS.items()}})


@bp.get('/actor')
@bearer_required
def actor():
    """The user the bearer token belongs to."""
    return jsonify(user_json(g.api_user))


@bp.patch('/user/<handle>')
@bearer_required
def update_user(handle):
    """Change the display name (null or "" clears it) and/or the handle; afterwards only the
    new handle's paths exist."""
    own_handle(handle)
    body = json_body({'display_name', 'handle'})
    wrong = {field: 'must be a string' for field, value in body.items()
             if not isinstance(value, str) and not (field == 'display_name' and value is None)}
    if wrong:
        raise invalid(wrong)
    handle_wanted = (body.get('handle') or '').strip().lower()
    if handle_wanted and handle_wanted != g.api_user.handle:
        _look_up_handle(g.api_user, handle_wanted)
    try:
        g.api_user.update_profile(body, request.remote_addr)
    except models.Invalid as error:
        raise invalid(error.errors) from None
    return jsonify(user_json(g.api_user))


def _look_up_handle(user, handle):
    """Refuse a handle `user` cannot take (400), as the console's preview does: finding one
    taken is counted, and past the limit the answer is 429 whether it is taken or free."""
    try:
        problem, _ = throttle.attempt(lambda: throttle.handle_lookup_counters(user),
                                      lambda: user.handle_lookup(handle),
                                      failed=lambda answer: answer[1])
    except TooManyRequests as refused:
        raise ApiError(429, 'Too Many Requests', TOO_MANY_LOOKUPS,
                       headers={'Retry-After': str(refused.retry_after)}) from None
    if problem:
        raise invalid({'handle': problem})


@bp.delete('/user/<handle>')
@bearer_required
def delete_user(handle):
    """Delete the account and everything it owns, given its password (a token alone may not);
    answers with the user as it was."""
    own_handle(handle)
    password = json_body({'password'}, optional=True).get('password')
    if password is not None and not isinstance(password, str):
        raise invalid({'password': 'must be a string'})
    # What no password can be is refused as it is, before it is counted or hashed.
    if password and len(password) > models.PASSWORD_MAX:
        raise invalid({'password': f'no password is longer than {models.PASSWORD_MAX} '
                                   'characters'})
    if password and (problem := models.text_problem(password)):
        raise invalid({'password': problem})
    if not password:
        raise ApiError(403, 'Forbidden', PASSWORD_NEEDED, [('body.password', 'required')])
    user = g.api_user
    # A wrong password here counts as a failed login, against the same allowance.
    try:
        checked = throttle.attempt(
            lambda: throttle.account_counters(user),
            lambda: user.password_checked(password, request.remote_addr))
    except TooManyRequests as refused:
        raise ApiError(429, 'Too Many Requests', TOO_MANY_PASSWORDS,
                       headers={'Retry-After': str(refused.retry_after)}) from None
    if not checked:
        raise ApiError(403, 'Forbidden', PASSWORD_WRONG, [('body.password', 'wrong password')])
    body = user_json(user)
    try:
        user.delete_account(request.remote_addr, password_hash=checked)
    except models.Refused as refused:
        raise ApiError(409, 'Conflict', str(refused)) from None
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
    try:
        box = models.Avatar.crop_box(form, required=False)
        models.Avatar.set_custom(g.api_user, file.read(imaging.UPLOAD_LIMIT + 1), box,
                                 request.remote_addr)
    except models.Invalid as error:
        raise invalid(error.errors) from None
    except imaging.BadImage as bad:
        raise invalid({'avatar': bad.message}) from None
    except imaging.Busy as busy:
        raise ApiError(503, 'Service Unavailable', busy.message,
                       headers={'Retry-After': str(busy.retry_after)}) from None
    return jsonify({'avatar_url': avatar_url(g.api_user)})


@bp.errorhandler(429)
def too_many_requests(error):
    """A rate limit (the avatar upload's, CLI login's, rotation's) as the error object, in
    its own words."""
    retry_after = getattr(error, 'retry_after', None)
    return problem(429, 'Too Many Requests', error.description,
                   headers={'Retry-After': str(retry_after)} if retry_after else None)


@bp.delete('/user/<handle>/avatar')
@bearer_required
def reset_avatar(handle):
    """Go back to the default avatar."""
    own_handle(handle)
    models.Avatar.reset(g.api_user, request.remote_addr)
    return jsonify({'avatar_url': avatar_url(g.api_user)})


def own_token(handle, token_id):
    """The token `token_id` of the bearer's own user; anyone else's, or none, is a 404."""
    own_handle(handle)
    token = credentials.Token.of(g.api_user.id, token_id)
    if token is None:
        raise ApiError(404, 'Not Found', f'No token with id "{token_id}".')
    token.user = g.api_user  # already loaded: the audit record needs it
    return token


@bp.get('/user/<handle>/token')
@bearer_required
def tokens(handle):
    """The user's tokens, oldest first."""
    page, cursor = own_page(handle, credentials.Token)
    return listing([token_json(token) for token in page], cursor)


@bp.post('/user/<handle>/token')
@bearer_required
def create_token(handle):
    """A new token; the only answer that ever holds its secret. 409 at the limit."""
    own_handle(handle)
    json_body(set(), optional=True)
    try:
        token, secret = credentials.Token.issue(g.api_user, request.remote_addr)
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
             if value not in SWITCH}
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
    records, cursor = models.AuditRecord.page(g.api_user, limit, after,
                                              request.args.get('action_type'))
    actors = models.AuditRecord.actors(records)
    return listing([audit_json(record, actors) for record in records], cursor)


@bp.get('/user/<handle>/workspace')
@bearer_required
def workspaces(handle):
    """The user's workspaces, oldest first, with the database password masked."""
    page, cursor = own_page(handle, Workspace)
    if not page:  # the password is made on first use: not before there is a workspace
        return listing([], cursor)
    password = DatabasePassword.for_user(g.api_user)
    masked = password.masked  # decrypted once for the page
    return listing([workspace_json(w, g.api_user, password, masked) for w in page], cursor)


@bp.get('/user/<handle>/password')
@bearer_required
def password(handle):
    """The user's database password, in plain text."""
    own_handle(handle)
    return jsonify(password_json(DatabasePassword.for_user(g.api_user)))


@bp.post('/user/<handle>/password')
@bearer_required
def rotate_password(handle):
    """Rotate the database password: 201 with the new one; every workspace gets it shortly,
    and with `{"end_connections": true}` their open connections are ended then."""
    own_handle(handle)
    body = json_body({'end_connections'}, optional=True)
    end = body.get('end_connections', False)
    if not isinstance(end, bool):
        raise invalid({'end_connections': 'must be true or false'})
    count_rotation(g.api_user)
    rotated = DatabasePassword.rotate(g.api_user, request.remote_addr, end_connections=end)
    response = jsonify(password_json(rotated))
    response.status_code = 201
    response.headers['Location'] = url_for('.password', handle=handle)
    return response


CODE_RE = re.compile(r'^[0-9]{6}$')


@bp.post('/login/token')
@limiter.limit('30 per minute', error_message='Too many login requests. Wait a minute, then '
                                              'try again.')
def login_start():
    """Start a CLI login request; the user verifies it at the returned `url` (no
    authentication: anyone may start one)."""
    if request.get_data():
        json_body(())
    login_request = credentials.LoginRequest.start(request.remote_addr)
    return jsonify(login_request_json(login_request)), 201


@bp.patch('/login/token/<request_id>')
def login_confirm(request_id):
    """The browser side: the logged-in user verifies the request and gets its code."""
    user = session_user()
    if request.get_data():
        body = json_body(('status',))
        if body.get('status', 'confirmed') != 'confirmed':
            raise ApiError(400, 'Bad Request', 'The only status this takes is "confirmed".',
                           [('body.status', 'must be "confirmed"')])
    if not user.session.recently_authenticated:
        raise password_not_recent(request_id)
    login_request = credentials.LoginRequest.claim(request_id, user) or login_gone()
    try:
        code = login_request.confirm(user, request.remote_addr)
    except models.Refused as refused:
        raise ApiError(409, 'Conflict', str(refused)) from None
    return jsonify({'id': login_request.id, 'status': 'confirmed', 'code': code})


@bp.delete('/login/token/<request_id>')
def login_decline(request_id):
    """The browser side: the logged-in user declines (deletes) the request."""
    user = session_user()
    login_request = credentials.LoginRequest.claim(request_id, user) or login_gone()
    login_request.decline(user, request.remote_addr)
    return '', 204


@bp.get('/login/token/<request_id>')
def login_exchange(request_id):
    """The CLI side: trade the 6-digit code of a verified request for a temporary token."""
    code = request.args.get('code', '')
    if not CODE_RE.match(code):
        raise ApiError(400, 'Bad Request', 'Send the 6-digit code shown in the browser as ?code=.',
                       [('query.code', 'must be 6 digits')])
    login_request = credentials.LoginRequest.open_request(request_id) or login_gone()
    try:
        secret = login_request.exchange(code, request.remote_addr)
    except credentials.WrongCode as wrong:
        raise ApiError(400, 'Bad Request', str(wrong), [
            ('query.code', f'wrong code; {wrong.attempts_left or "no"} attempts left')]) from None
    except credentials.NotVerified:
        raise ApiError(409, 'Conflict', 'This login request has not been verified in the '
                                        'browser yet. Open its URL, press Verify, then send '
                                        'the code.') from None
    except models.Refused:
        login_gone()
    token = credentials.TemporaryToken.get_or_none(
        credentials.TemporaryToken.token_hash == models.sha256(secret))
    if token is None:  # Reset authentication revoked it as soon as it was issued
        login_gone()
    return jsonify({'token': secret, 'expires_at': timestamp(token.expires_at)})


def login_request_json(login_request):
    return {'id': login_request.id, 'status': login_request.status,
            'created_at': timestamp(login_request.created_at),
            'expires_at': timestamp(login_request.expires_at),
            'url': url_for('cli_login.verify_page', r=login_request.id, _external=True)}


def session_user():
    """The browser session's user, for a request that carries the page's CSRF token (checked
    here, not by CSRFProtect, so that a failure is answered as the error object)."""
    if not current_user.is_authenticated:
        raise ApiError(401, 'Unauthorized', 'Log in to Penstock in this browser first.')
    try:
        validate_csrf(request.headers.get('X-CSRFToken'))
    except ValidationError:
        raise ApiError(400, 'Bad Request', 'Send the page\'s CSRF token in the X-CSRFToken '
                                           'header.',
                       [('header.X-CSRFToken', 'missing or invalid')]) from None
    return current_user._get_current_object()


def login_gone():
    raise ApiError(404, 'Not Found', credentials.LoginRequest.GONE)


def password_not_recent(request_id):
    """As the verify page's recent_login_required does, for the API: say where to confirm."""
    reauth = url_for('auth.reauthenticate', next=url_for('cli_login.verify_page', r=request_id))
    minutes = int(credentials.RECENT_LOGIN.total_seconds() // 60)
    return ApiError(403, 'Forbidden', f'Verifying a login request needs your password typed in '
                                      f'this browser within the last {minutes} minutes. '
                                      f'Confirm it at {reauth}, then try again.')
