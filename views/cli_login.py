"""CLI login: the browser page that verifies or declines a request.

The CLI starts a request (POST /api/v0/login/token), the signed-in user verifies it at
/login/token?r=<id> and is shown a 6-digit code, and the CLI trades that code for a
temporary token (GET /api/v0/login/token/<id>?code=NNNNNN); those endpoints are the API's
(views/api.py)."""
from flask import Blueprint, make_response, render_template, request
from flask_login import current_user, login_required

from credentials import LoginRequest
from models import Refused
from views import page_of, recent_login_required, respond

bp = Blueprint('cli_login', __name__)
REQUEST = 'cli_login/_request.html'
page_of(bp, 'cli_login/page.html', REQUEST, 'Verify login request')


def _page(state, login_request, status=200, **context):
    """The verify page, or for htmx its #login-request part (app.py keeps either out of
    caches: the user is logged in)."""
    return respond(REQUEST, status, state=state, login_request=login_request, **context)


def _gone():
    response = make_response(render_template('error.html', title='Login request not found',
                                             message=LoginRequest.GONE), 404)
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
