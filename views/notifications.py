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
    values = {name: name in request.form for name, _, _ in Preferences.CHOICES}
    Preferences.for_user(current_user.id).change(values, current_user, request.remote_addr)
    flash('Notification preferences saved.')
    if is_htmx():
        return render_fragment('_flash.html', oob=True)
    return redirect(url_for('.page'))
