"""Settings → Notifications: which emails the user wants."""
from flask import flash, redirect, request, url_for
from flask_login import current_user

from models import Preferences
from views import is_htmx, render_fragment, render_settings, settings_blueprint

bp = settings_blueprint('notifications', __name__, 'Notifications', 2)


@bp.get('/notifications')
def page():
    """Show the Notifications panel."""
    return render_settings('notifications/_panel.html', 'Notifications',
                           preferences=Preferences.for_user(current_user.id),
                           choices=Preferences.CHOICES)


@bp.post('/notifications')
def save():
    """Save every switch at once (System is not a choice, whatever the form says)."""
    form = request.form
    values = {name: name in form for name, _, _ in Preferences.CHOICES}
    # The user itself, not the proxy: the audit record reads several of its fields.
    Preferences.change(current_user._get_current_object(), values, request.remote_addr)
    message = 'Notification preferences saved.'
    if is_htmx():  # said in this answer, not kept in the session cookie for the next one
        return render_fragment('_flash.html', oob=True, messages=[message])
    flash(message)
    return redirect(url_for('.page'))
