"""Signing up, logging in and logging out."""
from flask import (
    Blueprint,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_limiter.util import get_remote_address
from flask_login import current_user, login_required, login_user, logout_user

import gravatar
from models import HANDLE_HOLD, HANDLE_RULES, PASSWORD_MAX, PASSWORD_MIN, Invalid, Session, User
from views import limiter

bp = Blueprint('auth', __name__)


def _login_failed(response):
    return response.status_code == 401


def _account_key():
    """Failed logins count against the account named, however it was spelled."""
    login = request.form.get('email', '').strip().lower()
    user = User.named(login)
    return 'account:' + (user.id if user else login)


def _safe_next(target):
    """Only paths on this site are followed after login, never another host."""
    if target and target.startswith('/') and not target.startswith(('//', '/\\')):
        return target
    return url_for('home.index')


def _start_session(user):
    session.clear()  # a fresh session (and CSRF token) for the new login
    session.permanent = True
    user.session = Session.open(user, request.remote_addr, request.user_agent.string)
    login_user(user)


@bp.route('/signup', methods=['GET', 'POST'])
@limiter.limit(lambda: current_app.config['SIGNUPS_PER_IP'], methods=['POST'],
               deduct_when=lambda response: response.status_code == 302)
def signup():
    """Create an account and log it in."""
    if current_user.is_authenticated:
        return redirect(url_for('home.index'))
    if request.method == 'GET':
        return render_template('auth/signup.html', form={}, rules=_rules())
    try:
        user = User.sign_up(request.form.get('email'), request.form.get('handle'),
                            request.form.get('password'), ip=request.remote_addr)
    except Invalid as invalid:
        return render_template('auth/signup.html', form=request.form, errors=invalid.errors,
                               rules=_rules()), 422
    gravatar.look_up_later(current_app._get_current_object(), user)
    _start_session(user)
    flash(f'Welcome to Penstock, {user.handle}.')
    return redirect(url_for('home.index'))


def _rules():
    return {'handle': HANDLE_RULES,
            'password': f'{PASSWORD_MIN} to {PASSWORD_MAX} characters.'}


@bp.route('/login', methods=['GET', 'POST'])
@limiter.limit(lambda: current_app.config['LOGIN_FAILURES_PER_ACCOUNT'], methods=['POST'],
               key_func=_account_key, deduct_when=_login_failed)
@limiter.limit(lambda: current_app.config['LOGIN_FAILURES_PER_IP'], methods=['POST'],
               key_func=get_remote_address, deduct_when=_login_failed)
def login():
    """Log in with email or handle and password."""
    next_url = request.values.get('next', '')
    if current_user.is_authenticated:
        return redirect(_safe_next(next_url))
    if request.method == 'GET':
        return render_template('auth/login.html', form={}, next=next_url)
    user = User.authenticate(request.form.get('email'), request.form.get('password'))
    if user is None:
        return render_template('auth/login.html', form=request.form, next=next_url,
                               error='That email or handle and password do not match. '
                                     'Check them and try again.'), 401
    _start_session(user)
    return redirect(_safe_next(next_url))


@bp.route('/reauth', methods=['GET', 'POST'])
@login_required
@limiter.limit(lambda: current_app.config['LOGIN_FAILURES_PER_ACCOUNT'], methods=['POST'],
               key_func=lambda: 'account:' + current_user.id, deduct_when=_login_failed)
def reauthenticate():
    """Ask for the password again before a dangerous action, then go back to it."""
    next_url = request.values.get('next', '')
    if request.method == 'GET':
        return _reauth_page(next_url)
    if not current_user.session.reauthenticate(request.form.get('password')):
        return _reauth_page(next_url, 401, errors={'password': 'That password is not right. '
                                                               'Try again.'})
    return redirect(_safe_next(next_url), 303)


def _reauth_page(next_url, status=200, **context):
    return render_template('auth/reauth.html', form={}, next=next_url,
                           back=_safe_next(next_url), **context), status


@bp.errorhandler(429)
def too_many_attempts(error):
    """Throttled: the same form, saying plainly when to try again."""
    message = 'Too many attempts. Wait a few minutes, then try again.'
    if request.endpoint == 'auth.signup':
        return render_template('auth/signup.html', form=request.form, error=message,
                               rules=_rules()), 429
    if request.endpoint == 'auth.reauthenticate':
        return _reauth_page(request.values.get('next', ''), 429, error=message)
    return render_template('auth/login.html', form=request.form, error=message,
                           next=request.values.get('next', '')), 429


@bp.get('/goodbye')
def goodbye():
    """Where a deleted account's browser lands: a public page saying it is done."""
    return render_template('auth/goodbye.html', hold_days=HANDLE_HOLD.days)


@bp.post('/logout')
@login_required
def logout():
    """End this browser's session."""
    current_user.session.close(request.remote_addr)
    logout_user()
    session.clear()
    flash('You are logged out.')
    return redirect(url_for('auth.login'))
