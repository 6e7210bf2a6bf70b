"""Settings → Notifications: which emails the user wants."""
from flask import request
from flask_login import current_user

from models import Preferences
from views import respond, settings_blueprint

bp = settings_blueprint('notifications', __name__, 'Notifications', 2)


@bp.get('/notifications')
def page():
    """Show the Notifications panel."""
    return respond(preferences=Preferences.for_user(current_user.id),
                   choices=Preferences.CHOICES)


@bp.post('/notifications')
def save():
    """Save every switch at once (System is not a choice, whatever the form says)."""
    form = request.form
    values = {name: name in form for name, _, _ in Preferences.CHOICES}
    # The user itself, not the proxy: the audit record reads several of its fields.
    Preferences.change(current_user._get_current_object(), values, request.remote_addr)
    # htmx swaps nothing here (the switches are as the person left them) but the message.
    return respond(None, said='Notification preferences saved.', then='.page')
