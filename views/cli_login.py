"""CLI login: the browser page that verifies or declines a request, and its API endpoints.

The CLI starts a request (POST /api/v0/login/token), the signed-in user verifies it at
/login/token?r=<id> and is shown a 6-digit code, and the CLI trades that code for a
temporary token (GET /api/v0/login/token/<id>?code=NNNNNN)."""
import re

from flask import Blueprint, jsonify, make_response, render_template, request, url_for
from flask_login import current_user, login_required
from flask_wtf.csrf import ValidationError, validate_csrf

from models import (
    RECENT_LOGIN,
    LoginRequest,
    NotVerified,
    Refused,
    TemporaryToken,
    WrongCode,
    sha256,
)
from views import csrf, limiter, page_of, recent_login_required, respond
from views.api import ApiError, api_error, json_body, problem, timestamp

bp = Blueprint('cli_login', __name__)
REQUEST = 'cli_login/_request.html'
page_of(bp, 'cli_login/page.html', REQUEST, 'Verify login request')
bp.register_error_handler(ApiError, api_error)

CODE_RE = re.compile(r'^[0-9]{6}$')
GONE = ('This login request does not exist, has expired or was already answered. '
        'Start a new one from the command line.')


def _page(state, login_request, status=200, **context):
    """The verify page, or for htmx its #login-request part (app.py keeps either out of
    caches: the user is logged in)."""
    return respond(REQUEST, status, state=state, login_request=login_request, **context)


def _gone():
    response = make_response(render_template('error.html', title='Login request not found',
                                             message=GONE), 404)
    response.headers['Cache-Control'] = 'no-store'
    return response


@bp.get('/login/token')
@login_required
@recent_login_required  # asked before the choice, so the password page leads back to it
def verify_page():
    """Ask the user to verify or decline the CLI login request ?r=<id>."""
    login_request = LoginRequest.claim(request.args.get('r') or '', current_user)
    if login_request is None:
        return _gone()
    return _page('ask' if login_request.status == 'pending' else 'answered', login_request)


@bp.post('/login/token/<request_id>/verify')
@login_required
@recent_login_required
def verify(request_id):
    """Vouch for the request and show its code, once (never in a URL)."""
    login_request = LoginRequest.claim(request_id, current_user)
    if login_request is None:
        return _gone()
    try:
        code = login_request.confirm(current_user._get_current_object(), request.remote_addr)
    except Refused:
        return _page('answered', login_request, 409)
    return _page('code', login_request, code=code)


@bp.post('/login/token/<request_id>/decline')
@login_required
def decline(request_id):
    """Delete the request: that CLI can never log in with it."""
    login_request = LoginRequest.claim(request_id, current_user)
    if login_request is None:
        return _gone()
    login_request.decline(current_user._get_current_object(), request.remote_addr)
    return _page('declined', login_request)


@bp.post('/api/v0/login/token')
@csrf.exempt  # no cookies involved: anyone may start a request
@limiter.limit('30 per minute')
def api_start():
    """Start a CLI login request; the user verifies it at the returned `url`."""
    if request.get_data():
        json_body(())
    login_request = LoginRequest.start(request.remote_addr)
    return jsonify(_request_json(login_request)), 201


@bp.patch('/api/v0/login/token/<request_id>')
@csrf.exempt  # checked below, so a failure is answered as the API's error object
def api_confirm(request_id):
    """The browser side: the logged-in user verifies the request and gets its code."""
    user = _session_user()
    if request.get_data():
        body = json_body(('status',))
        if body.get('status', 'confirmed') != 'confirmed':
            raise ApiError(400, 'Bad Request', 'The only status this takes is "confirmed".',
                           [('body.status', 'must be "confirmed"')])
    if not user.session.recently_authenticated:
        _password_not_recent(request_id)
    login_request = LoginRequest.claim(request_id, user) or _not_found()
    try:
        code = login_request.confirm(user, request.remote_addr)
    except Refused as refused:
        raise ApiError(409, 'Conflict', str(refused)) from None
    response = jsonify({'id': login_request.id, 'status': 'confirmed', 'code': code})
    response.headers['Cache-Control'] = 'no-store'
    return response


@bp.delete('/api/v0/login/token/<request_id>')
@csrf.exempt  # checked below, as for PATCH
def api_decline(request_id):
    """The browser side: the logged-in user declines (deletes) the request."""
    user = _session_user()
    login_request = LoginRequest.claim(request_id, user) or _not_found()
    login_request.decline(user, request.remote_addr)
    return '', 204


@bp.get('/api/v0/login/token/<request_id>')
def api_exchange(request_id):
    """The CLI side: trade the 6-digit code of a verified request for a temporary token."""
    code = request.args.get('code', '')
    if not CODE_RE.match(code):
        raise ApiError(400, 'Bad Request', 'Send the 6-digit code shown in the browser as ?code=.',
                       [('query.code', 'must be 6 digits')])
    login_request = LoginRequest.open_request(request_id) or _not_found()
    try:
        secret = login_request.exchange(code, request.remote_addr)
    except WrongCode as wrong:
        raise ApiError(400, 'Bad Request', str(wrong), [
            ('query.code', f'wrong code; {wrong.attempts_left or "no"} attempts left')]) from None
    except NotVerified:
        _not_verified()
    except Refused:
        _not_found()
    token = TemporaryToken.get_or_none(TemporaryToken.token_hash == sha256(secret))
    if token is None:  # Reset authentication revoked it as soon as it was issued
        _not_found()
    response = jsonify({'token': secret, 'expires_at': timestamp(token.expires_at)})
    response.headers['Cache-Control'] = 'no-store'
    return response


@bp.errorhandler(429)
def too_many_requests(error):
    return problem(429, 'Too Many Requests', 'Too many login requests. Wait a minute, then '
                                             'try again.')


def _request_json(login_request):
    return {'id': login_request.id, 'status': login_request.status,
            'created_at': timestamp(login_request.created_at),
            'expires_at': timestamp(login_request.expires_at),
            'url': url_for('cli_login.verify_page', r=login_request.id, _external=True)}


def _session_user():
    """The browser session's user, for a request that carries the page's CSRF token."""
    if not current_user.is_authenticated:
        raise ApiError(401, 'Unauthorized', 'Log in to Penstock in this browser first.')
    try:
        validate_csrf(request.headers.get('X-CSRFToken'))
    except ValidationError:
        raise ApiError(400, 'Bad Request', 'Send the page\'s CSRF token in the X-CSRFToken '
                                           'header.',
                       [('header.X-CSRFToken', 'missing or invalid')]) from None
    return current_user._get_current_object()


def _not_found():
    raise ApiError(404, 'Not Found', GONE)


def _password_not_recent(request_id):
    """As the verify page's recent_login_required does, for the API: say where to confirm."""
    reauth = url_for('auth.reauthenticate', next=url_for('cli_login.verify_page', r=request_id))
    minutes = int(RECENT_LOGIN.total_seconds() // 60)
    raise ApiError(403, 'Forbidden', f'Verifying a login request needs your password typed in '
                                     f'this browser within the last {minutes} minutes. '
                                     f'Confirm it at {reauth}, then try again.')


def _not_verified():
    raise ApiError(409, 'Conflict', 'This login request has not been verified in the browser '
                                    'yet. Open its URL, press Verify, then send the code.')
