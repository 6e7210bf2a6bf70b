"""Signing up, logging in and logging out."""
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

import gravatar
import throttle
from credentials import Session
from models import HANDLE_HOLD, HANDLE_RULES, PASSWORD_MAX, PASSWORD_MIN, Invalid, User
from views import return_target

bp = Blueprint('auth', __name__)


def _start_session(user, opened=None):
    """Log this browser in as `user`, to the Session row `opened` (a new one when None)."""
    session.clear()  # a fresh session (and CSRF token) for the new login
    session.permanent = True
    user.session = opened or Session.sign_in(user, request.remote_addr, request.user_agent.string)
    login_user(user)
    # Flask-Login also keeps a "fresh" flag and an identifier for its session protection, both
    # unused here (see views.login_manager): the cookie every request sends and decodes is a
    # third shorter without them.
    session.pop('_fresh')
    session.pop('_id')
    throttle.trust_this_browser(user)


@bp.route('/signup', methods=['GET', 'POST'])
@throttle.counted(throttle.signup_counters)
def signup():
    """Create an account and log it in."""
    if current_user.is_authenticated:
        return redirect(url_for('home.index'))
    if request.method == 'GET':
        return render_template('auth/signup.html', form={}, rules=_rules())
    try:
        opened = Session.sign_up(
            request.form.get('email'), request.form.get('handle'), request.form.get('password'),
            request.remote_addr, request.user_agent.string)
    except Invalid as invalid:
        return render_template('auth/signup.html', form=request.form, errors=invalid.errors,
                               rules=_rules()), 422
    user = opened.user
    gravatar.look_up_later(current_app._get_current_object(), user)
    _start_session(user, opened)
    flash(f'Welcome to Penstock, {user.handle}.')
    return redirect(url_for('home.index'))


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
        return render_template('auth/login.html', form={}, next=next_url)
    user = User.authenticate(request.form.get('email'), request.form.get('password'),
                             ip=request.remote_addr)
    if user is None:
        return render_template('auth/login.html', form=request.form, next=next_url,
                               error='That email or handle and password do not match. '
                                     'Check them and try again.'), 401
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
    if request.endpoint == 'auth.signup':
        page = render_template('auth/signup.html', form=request.form, error=message,
                               rules=_rules()), 429
    elif request.endpoint == 'auth.reauthenticate':
        page = _reauth_page(return_target(request.values.get('next')), 429, error=message)
    else:
        page = render_template('auth/login.html', form=request.form, error=message,
                               next=return_target(request.values.get('next'))), 429
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
