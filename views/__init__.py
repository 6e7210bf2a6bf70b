"""What every blueprint shares: the Flask extensions and the page-or-fragment rendering."""
from flask import Blueprint, abort, g, make_response, render_template, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager, current_user
from flask_wtf.csrf import CSRFProtect

login_manager = LoginManager()
csrf = CSRFProtect()
limiter = Limiter(key_func=get_remote_address)


def is_htmx():
    """True for a request made by htmx (not a boosted link): it wants a fragment back."""
    return (request.headers.get('HX-Request') == 'true'
            and request.headers.get('HX-Boosted') != 'true'
            and request.headers.get('HX-History-Restore-Request') != 'true')


def render_settings(panel, title, status=200, **context):
    """A settings panel: the whole page, or for htmx only the panel and what goes with it."""
    template = 'settings/_fragment.html' if is_htmx() else 'settings/page.html'
    response = make_response(render_template(template, panel=panel, title=title, **context),
                             status)
    response.vary.add('HX-Request')
    return response


def render_fragment(template, status=200, **context):
    """A fragment for htmx, with the flash messages and anything else swapped out of band."""
    response = make_response(render_template(template, **context), status)
    response.vary.add('HX-Request')
    return response


# The settings menu, in SPEC order: (position, endpoint, label), filled by settings_blueprint.
SETTINGS_MENU = []


def settings_menu():
    return [(endpoint, label) for _, endpoint, label in sorted(SETTINGS_MENU)]


def settings_blueprint(name, import_name, menu_label, menu_position, endpoint='page'):
    """A blueprint under /user/<handle>/settings that only the logged-in owner can reach.

    Its `endpoint` view is listed in the settings menu as `menu_label` at `menu_position`."""
    bp = Blueprint(name, import_name, url_prefix='/user/<handle>/settings')
    entry = (menu_position, f'{name}.{endpoint}', menu_label)
    if entry not in SETTINGS_MENU:
        SETTINGS_MENU.append(entry)

    @bp.url_value_preprocessor
    def pull_handle(endpoint, values):
        g.handle = values.pop('handle')

    @bp.url_defaults
    def add_handle(endpoint, values):
        if current_user.is_authenticated:
            values.setdefault('handle', current_user.handle)

    @bp.before_request
    def require_owner():
        if not current_user.is_authenticated:
            return login_manager.unauthorized()
        if g.handle != current_user.handle:
            abort(404)

    return bp
