"""Signing up (and verifying the address: its link, Resend verification email), logging in and
logging out."""
from urllib.parse import unquote, urlsplit

from flask import (
    Blueprint,
    current_app,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import current_user, login_required, login_user, logout_user
from werkzeug.exceptions import HTTPException

import addresses
import gravatar
import throttle
from credentials import Session
from models import HANDLE_HOLD, HANDLE_RULES, PASSWORD_MAX, PASSWORD_MIN, Invalid, User
from views import SETTINGS_MENU, is_htmx, return_target

bp = Blueprint('auth', __name__)


def _start_session(user, opened=None):
    """Log this browser in as `user`, to the Session row `opened` (a new one when None)."""
    session.clear()  # a fresh session (and CSRF token) for the new login
    session.permanent = True
    user.session = opened or Session.sign_in(user, request.remote_addr, request.user_agent.string)
    login_user(user)
    throttle.trust_this_browser(user)


@bp.route('/signup', methods=['GET', 'POST'])
@throttle.counted(throttle.signup_counters)
def signup():
    """Create an account and log it in, then go on to `next` (the console home by default)."""
    next_url = return_target(request.values.get('next'))
    if current_user.is_authenticated:
        return redirect(next_url)
    if request.method == 'GET':
        return _signup_page(next_url)
    try:
        opened = Session.sign_up(
            request.form.get('email'), request.form.get('handle'), request.form.get('password'),
            request.remote_addr, request.user_agent.string)
    except Invalid as invalid:
        return _signup_page(next_url, 422, form=request.form, errors=invalid.errors)
    user = opened.user
    gravatar.look_up_later(current_app._get_current_object(), user)
    _start_session(user, opened)
    flash(f'Welcome to Penstock, {user.handle}.')
    return redirect(next_url)


@bp.get('/signup/confirm')
def verify_email():
    """Verify the address the emailed link names (no login needed) and say so."""
    # A GET that changes state: the link is opened from an email, so it must be a GET. Doing
    # it twice changes nothing more (see docs/design.md, "Verified email").
    try:
        user, already = addresses.verify(request.args.get('t'), request.remote_addr)
    except addresses.LinkRefused as refused:
        return _verified_page(refused.status, error=refused.message)
    if current_user.is_authenticated and current_user.id == user.id:  # no banner on this page
        current_user.email, current_user.email_verified_at = user.email, user.email_verified_at
    return _verified_page(address=user.email, already=already)


def _verified_page(status=200, **context):
    """What opening a verification link did, kept out of caches (its URL holds the token)."""
    response = make_response(render_template('auth/verified.html', **context), status)
    response.headers['Cache-Control'] = 'no-store'
    return response


@bp.post('/signup/resend')
@login_required
def resend_verification():
    """Send the link that verifies the account's address again (at most 3 an hour)."""
    try:
        addresses.ask_to_verify(current_user, request.remote_addr)
    except addresses.TooSoon as too_soon:
        said = str(too_soon)
        if is_htmx():  # app.js shows an error answer's alert in the page's live region
            response = make_response(render_template(
                'error.html', title='Too many verification emails', message=said), 429)
            response.headers['Retry-After'] = str(too_soon.retry_after)
            response.headers['Vary'] = 'HX-Request'
            return response
    else:
        said = f'We sent a new link to {current_user.email}.'
    if is_htmx():  # the banner again, and what happened in the page's live region
        response = make_response(render_template('_verify_banner.html')
                                 + render_template('_flash.html', oob=True, messages=[said]))
        response.headers['Vary'] = 'HX-Request'
        return response
    flash(said)
    response = redirect(url_for('home.index'), 303)  # the console home shows the banner too
    response.headers['Vary'] = 'HX-Request'
    return response


def _signup_page(next_url, status=200, **context):
    context.setdefault('form', {})
    return render_template('auth/signup.html', rules=_rules(), **_way_back(next_url),
                           **context), status


def _login_page(next_url, status=200, **context):
    context.setdefault('form', {})
    return render_template('auth/login.html', **_way_back(next_url), **context), status


def _way_back(next_url):
    """What the login and sign-up pages need of their return target: `next` for the form,
    `carried` for the link to the other page (None when it is the console home, which both
    lead to anyway) and `reason`, why the visitor was sent here (None when not known)."""
    carried = None if next_url == url_for('home.index') else next_url
    return {'next': next_url, 'carried': carried, 'reason': carried and _reason(carried)}


def _reason(target):
    """Why a visitor sent to log in with `target` (a path on this site) is asked to: the
    words after "Log in" or "Sign up", for the pages that say what they are; else None."""
    try:
        endpoint, _ = current_app.url_map.bind(request.host).match(
            unquote(urlsplit(target).path), 'GET')
    except HTTPException:  # not a page (a redirect or a 404 and so on): nothing to say
        return None
    if endpoint == 'cli_login.verify_page':
        return 'to verify the CLI login request'
    for _, settings_endpoint, label in SETTINGS_MENU:
        if endpoint.partition('.')[0] == settings_endpoint.partition('.')[0]:
            return f'to continue to Settings → {label}'
    return None


def _rules():
    return {'handle': HANDLE_RULES,
            'password': f'{PASSWORD_MIN} to {PASSWORD_MAX} characters.'}


@bp.route('/login', methods=['GET', 'POST'])
@throttle.counted(throttle.login_counters)
def login():
    """Log in with email or handle and password."""
    next_url = return_target(request.values.get('next'))
    if current_user.is_authenticated:
        return redirect(next_url)
    if request.method == 'GET':
        return _login_page(next_url)
    user = User.authenticate(request.form.get('email'), request.form.get('password'),
                             ip=request.remote_addr)
    if user is None:
        return _login_page(next_url, 401, form=request.form,
                           error='That email or handle and password do not match. '
                                 'Check them and try again.')
    _start_session(user)
    return redirect(next_url)


@bp.route('/reauth', methods=['GET', 'POST'])
@login_required
@throttle.counted(throttle.reauth_counters)
def reauthenticate():
    """Ask for the password again before a dangerous action, then go back to it."""
    next_url = return_target(request.values.get('next'))
    if request.method == 'GET':
        return _reauth_page(next_url)
    if not current_user.session.reauthenticate(request.form.get('password'), request.remote_addr):
        return _reauth_page(next_url, 401, errors={'password': 'That password is not right. '
                                                               'Try again.'})
    return redirect(next_url, 303)


def _reauth_page(next_url, status=200, **context):
    return render_template('auth/reauth.html', form={}, next=next_url, **context), status


@bp.errorhandler(429)
def too_many_attempts(error):
    """Throttled: the same form, saying plainly when to try again (and Retry-After when)."""
    message = 'Too many attempts. Wait a few minutes, then try again.'
    next_url = return_target(request.values.get('next'))
    if request.endpoint == 'auth.signup':
        page = _signup_page(next_url, 429, form=request.form, error=message)
    elif request.endpoint == 'auth.reauthenticate':
        page = _reauth_page(next_url, 429, error=message)
    else:
        page = _login_page(next_url, 429, form=request.form, error=message)
    response = make_response(page)
    if getattr(error, 'retry_after', None):
        response.headers['Retry-After'] = str(error.retry_after)
    return response


@bp.get('/goodbye')
def goodbye():
    """Where a deleted account's browser lands: a public page saying it is done."""
    return render_template('auth/goodbye.html', hold_days=HANDLE_HOLD.days)


@bp.post('/logout')
@login_required
def logout():
    """End this browser's session."""
    current_user.session.sign_out(request.remote_addr)
    logout_user()
    session.clear()
    flash('You are logged out.')
    return redirect(url_for('auth.login'))
