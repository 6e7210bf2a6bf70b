"""Settings → Advanced: account-wide actions, one section each (for now Reset authentication)."""
from flask import flash, make_response, redirect, request, session, url_for
from flask_login import current_user, logout_user

from models import reset_authentication
from views import is_htmx, render_fragment, render_settings, settings_blueprint

bp = settings_blueprint('advanced', __name__, 'Advanced', 4)

RESET_DONE = ('Authentication was reset: you were logged out here and on every other device, '
              'and every token and CLI login was revoked. Log in again to continue.')


@bp.get('/advanced')
def page():
    """Show the Advanced panel; htmx's Cancel asks for just the Reset authentication section."""
    if is_htmx() and request.headers.get('HX-Target') == 'reset-authentication':
        response = render_fragment('advanced/_reset.html', focus_button=True)
    else:
        response = render_settings('advanced/_panel.html', 'Advanced')
    response.vary.add('HX-Target')
    return response


@bp.get('/advanced/reset-authentication')
def confirm_reset():
    """The confirmation step: inline for htmx, the Advanced page in that state otherwise."""
    if is_htmx():
        return render_fragment('advanced/_reset.html', confirming=True)
    return render_settings('advanced/_panel.html', 'Advanced', confirming=True)


@bp.post('/advanced/reset-authentication')
def reset():
    """End every session and token of the account, then log this browser out."""
    reset_authentication(current_user._get_current_object(), request.remote_addr)
    logout_user()
    session.clear()
    flash(RESET_DONE)
    target = url_for('auth.login')
    if is_htmx():
        response = make_response('', 204)
        response.headers['HX-Redirect'] = target
        return response
    return redirect(target)
