"""Settings → Profile: display name and the read-only email."""
from flask import flash, redirect, request, url_for
from flask_login import current_user

from models import DISPLAY_NAME_MAX, Invalid
from views import is_htmx, render_fragment, render_settings, settings_blueprint

bp = settings_blueprint('profile', __name__, 'Profile', 1)


@bp.get('/profile')
def page():
    """Show the Profile panel."""
    return render_settings('profile/_panel.html', 'Profile', max_name=DISPLAY_NAME_MAX)


@bp.post('/profile')
def save_name():
    """Save the display name: inline for htmx, POST/redirect/GET otherwise."""
    value = request.form.get('display_name', '')
    try:
        current_user.set_display_name(value, request.remote_addr)
    except Invalid as invalid:
        context = dict(errors=invalid.errors, value=value, max_name=DISPLAY_NAME_MAX)
        if is_htmx():
            return render_fragment('profile/_name_response.html', 422, **context)
        return render_settings('profile/_panel.html', 'Profile', 422, **context)
    flash('Display name saved.')
    if is_htmx():
        return render_fragment('profile/_name_response.html', max_name=DISPLAY_NAME_MAX,
                               header_changed=True)
    return redirect(url_for('.page'))
