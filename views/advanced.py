"""Settings → Advanced: account-wide actions, one section each: Sessions, Handle, Reset
authentication and Delete Personal Account."""
import math

from flask import abort, flash, request, session, url_for
from flask_login import current_user, logout_user
from werkzeug.exceptions import TooManyRequests

import throttle
from accounts import reset_authentication
from credentials import Session, device
from models import HANDLE_HOLD, HANDLE_RULES, Invalid
from views import go_to, recent_login_required, respond, settings_blueprint
from workspaces import Workspace

bp = settings_blueprint('advanced', __name__, 'Advanced', 4)

RESET_DONE = ('Authentication was reset: you were logged out here and on every other device, '
              'every token and CLI login was revoked, and your database password was rotated '
              '(open connections to your workspaces are being ended). Log in again to continue.')
HANDLE_WARNING = ('Your workspace DNS names all contain your user handle; changing it will '
                  'result in changing the DNS name for ALL of your workspaces.')
WRONG_CONFIRMATION = 'Type your handle exactly as it is shown to delete your account.'
TOO_MANY_LOOKUPS = ('Many of the handles looked up from your account or network were taken, '
                    'so this one was not looked up. Try again in {wait}.')

# Each section of the panel by its element id: what htmx asks for when a step is cancelled.
SECTIONS = {
    'sessions': 'advanced/_sessions.html',
    'change-handle': 'advanced/_handle.html',
    'reset-authentication': 'advanced/_reset.html',
    'delete-account': 'advanced/_delete.html',
}


def _context(**context):
    """What every section of the Advanced panel needs, and `context` for the one in question."""
    user = current_user._get_current_object()
    context.setdefault('handle_value', user.handle)
    return dict(sessions=Session.for_user(user), current_session_id=user.session.id,
                device=device, handle_rules=HANDLE_RULES, hold_days=HANDLE_HOLD.days,
                handle_warning=HANDLE_WARNING, **context)


def _host_changes(handle):
    """(old host, new host) for each of the user's workspaces, if the handle became `handle`."""
    return [(workspace.host(current_user.handle), workspace.host(handle))
            for workspace in Workspace.for_user(current_user.id)]


def _look_up(handle):
    """Why the user cannot take `handle`, or None; finding it taken is counted (throttle.py)."""
    user = current_user._get_current_object()
    problem, _ = throttle.attempt(lambda: throttle.handle_lookup_counters(user),
                                  lambda: user.handle_lookup(handle),
                                  failed=lambda answer: answer[1])
    return problem


def too_many_lookups(refused):
    """What a handle lookup answers once the throttle has refused it (TooManyRequests)."""
    minutes = max(1, math.ceil(refused.retry_after / 60))
    return TOO_MANY_LOOKUPS.format(wait=f'{minutes} minute{"s" if minutes != 1 else ""}')


def _section(section, status=200, **context):
    """One section for htmx, or without JavaScript the whole Advanced page in that state."""
    return respond(SECTIONS[section], status, **_context(**context))


@bp.get('/advanced')
def page():
    """Show the Advanced panel; htmx's Cancel asks for just the section it was in."""
    return respond(targets=SECTIONS, **_context())


@bp.post('/advanced/sessions/<session_id>/revoke')
def revoke_session(session_id):
    """Log another browser of the user's out; this one is logged out with Log out instead."""
    user = current_user._get_current_object()
    gone = Session.get_or_none(Session.id == session_id, Session.user == user.id)
    if gone is None or gone.id == user.session.id \
            or not Session.revoke(user, session_id, request.remote_addr):
        abort(404)
    return respond(SECTIONS['sessions'], then='.page#sessions',
                   said=f'Session revoked: {device(gone.user_agent)}'
                        f'{", " + gone.ip if gone.ip else ""}. That browser is logged out.',
                   **_context(focus='sessions'))


@bp.get('/advanced/handle/preview')
def preview_handle():
    """The workspace DNS names a new handle would give, as it is typed (htmx)."""
    handle = (request.args.get('handle') or '').strip().lower()
    problem = changes = None
    if handle and handle != current_user.handle:  # else nothing to preview (yet, or again)
        try:
            problem = _look_up(handle)
        except TooManyRequests as refused:  # the same answer whether it is taken or free
            problem = too_many_lookups(refused)
        else:
            changes = None if problem else _host_changes(handle)
    return respond('advanced/_handle_preview.html',
                   then='.page#change-handle', new_handle=handle,
                   problem=problem, changes=changes)


@bp.post('/advanced/handle')
@recent_login_required
def change_handle():
    """Change the handle in two steps: show which DNS names change, then save when confirmed."""
    user = current_user._get_current_object()
    handle = (request.form.get('handle') or '').strip().lower()
    try:
        problem = _look_up(handle)
    except TooManyRequests as refused:
        problem = too_many_lookups(refused)
    if problem:
        return _section('change-handle', 422, handle_value=request.form.get('handle', ''),
                        handle_error=problem)
    if request.form.get('previewed') != '1':
        return _section('change-handle', handle_value=handle, previewing=True,
                        changes=_host_changes(handle))
    try:
        user.change_handle(handle, request.remote_addr)
    except Invalid as invalid:  # taken between the preview and now
        return _section('change-handle', 422, handle_value=handle,
                        handle_error=invalid.errors['handle'])
    flash(f'Handle changed to {user.handle}.')
    return go_to(url_for('.page'))


@bp.get('/advanced/reset-authentication', defaults={'section': 'reset-authentication'},
        endpoint='confirm_reset')
@bp.get('/advanced/delete', defaults={'section': 'delete-account'}, endpoint='confirm_delete')
@recent_login_required
def confirm(section):
    """The confirmation step of Reset authentication or Delete Personal Account (which asks
    the user to type their handle): inline for htmx, the Advanced page in that state
    otherwise."""
    return _section(section, confirming=section)


@bp.post('/advanced/reset-authentication')
@recent_login_required
def reset():
    """End every session and token of the account and every connection to its workspaces
    (with a new database password), then log this browser out."""
    reset_authentication(current_user._get_current_object(), request.remote_addr)
    logout_user()
    session.clear()
    flash(RESET_DONE)
    return go_to(url_for('auth.login'))


@bp.post('/advanced/delete')
@recent_login_required
def delete_account():
    """Delete the account and everything in it, log out, and say goodbye."""
    user = current_user._get_current_object()
    typed = request.form.get('confirm', '')
    if typed.strip() != user.handle:
        return _section('delete-account', 422, confirming='delete-account', confirm_value=typed,
                        confirm_error=WRONG_CONFIRMATION)
    user.delete_account(request.remote_addr)
    logout_user()
    session.clear()
    return go_to(url_for('auth.goodbye'))
