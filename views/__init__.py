"""What every blueprint shares: the Flask extensions, the one responder that answers with a
page or a fragment, the guard on dangerous actions, where a return target may lead, the check
for control characters in URLs and headers, and the signed cursors and record shape of the
audit log's pages, the API's and the exports', and the redaction of secrets from logged URLs."""
import dataclasses
import datetime
import functools
import json
import logging
import re
from collections.abc import Callable
from urllib.parse import quote, unquote_plus, urlsplit

from flask import (Blueprint, abort, current_app, flash, g, make_response, redirect,
                   render_template, request, url_for)
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager, current_user
from flask_wtf.csrf import CSRFProtect
from itsdangerous import BadSignature, URLSafeSerializer
from markupsafe import Markup, escape

from models import HandleHold
from views.avatars import avatar_url

login_manager = LoginManager()
# Flask-Login's session protection only marks a session "not fresh" when the IP or browser
# changes, and nothing here asks for freshness: a login is a credentials.Session row (revocable,
# with its own re-authentication time), so it is off (tests/test_auth.py pins what that means).
login_manager.session_protection = None
csrf = CSRFProtect()
limiter = Limiter(key_func=get_remote_address)


def is_htmx():
    """True for a request made by htmx (not a boosted link): it wants a fragment back."""
    headers = request.headers
    return (headers.get('HX-Request') == 'true' and headers.get('HX-Boosted') != 'true'
            and headers.get('HX-History-Restore-Request') != 'true')


@dataclasses.dataclass
class Page:
    """How an area's pages are built: `layout` is the whole page around a panel; `panel` and
    `title` are what its views show unless they say otherwise; `around` lists the parts of
    the layout that change with the panel (swapped out of band when htmx asks for the panel
    alone); `context`, if set, fills in what the whole panel needs that a view did not pass
    (called only when the whole panel is rendered)."""
    layout: str
    panel: str
    title: str
    around: tuple = ()
    context: Callable[[dict], None] | None = None


# Each blueprint's Page, by blueprint name.
PAGES = {}
# respond()'s default part: the area's whole panel.
PANEL = object()


def page_of(bp, layout, panel, title, around=()):
    """Register how the pages of blueprint `bp` are built (see Page)."""
    PAGES[bp.name] = Page(layout, panel, title, tuple(around))


def panel_context(bp):
    """Decorator: the function that fills in what the whole panel of `bp` needs (see Page)."""
    def register(function):
        PAGES[bp.name].context = function
        return function
    return register


def respond(part=PANEL, status=200, *, oob=(), targets=None, said=None, then=None,
            panel=None, title=None, **context):
    """The answer to a request for a page or a piece of it; the one place that tells them apart.

    The view says what to show: `part`, the template htmx swaps into its target (the area's
    whole panel by default; None for nothing but what goes out of band); `targets`, the part
    to send instead when the request's HX-Target is one of its keys (a Cancel asking for its
    section back; that part gets `focus` = the target); `oob`, parts that change elsewhere on
    the page; `said`, a status message; `status`, such as 422 for refused input; `then`,
    where a request without htmx goes once an action has worked (a URL, or an endpoint with
    an optional #anchor, so that no URL is built for htmx); `panel` and `title`, when a whole
    page shows something other than the area's panel.

    For htmx: the part, then each `oob` part out of band, and the flash region out of band
    with the whole panel, on an action (any method but GET) or with `said`. The whole panel
    comes with the page's <title>, the layout's parts that change with it, and `focus` on its
    heading. Without htmx: a 303 to `then` (the message flashed for that page), or the whole
    page. Either way the answer varies with HX-Request (and with HX-Target for `targets`);
    `said` never goes through the session when it is shown in this very answer."""
    page = PAGES[request.blueprint]
    htmx = is_htmx()
    vary = 'HX-Request'
    if targets is not None:
        vary = 'HX-Request, HX-Target'
        target = request.headers.get('HX-Target') if htmx else None
        if target in targets:
            part = targets[target]
            context.setdefault('focus', target)
    if not htmx and then is not None and status < 400:
        if said is not None:
            flash(said)
        if not then.startswith('/'):
            endpoint, _, anchor = then.partition('#')
            then = url_for(endpoint, _anchor=anchor or None)
        response = redirect(then, 303)
    else:
        if said is not None:
            context['messages'] = [said]
        whole = not htmx or part is PANEL
        if whole:
            if page.context is not None:
                page.context(context)
            part, title = panel or page.panel, title or page.title
        if not htmx:
            body = render_template(page.layout, panel=part, title=title, **context)
        else:
            oob = [*(page.around if whole else ()), *oob]
            if whole or said is not None or request.method != 'GET':
                oob.append('_flash.html')
            if whole:
                context.setdefault('focus', 'panel-heading')
            body = _swap(part, oob, context, title if whole else None)
        response = make_response(body, status)
    response.headers['Vary'] = vary
    return response


def _swap(part, oob, context, title):
    """htmx's answer: the page's <title> (with a whole panel), `part` for the request's
    target, then each template of `oob` out of band (rendered with oob=True). No template
    exists only to include them, and they share one context, made once: Jinja's public
    Template.make_module with `shared` renders with the dict given as the whole context, where
    Template.render would copy the globals into a new one for each."""
    app = current_app._get_current_object()
    app.update_template_context(context)
    env = app.jinja_env
    shared = {**env.globals, **context}

    def render(name):
        return str(env.get_template(name).make_module(shared, shared=True))

    html = [Markup('<title>%s · Penstock</title>\n') % title] if title else []
    if part is not None:
        html.append(render(part))
    shared['oob'] = True
    html += [render(name) for name in oob]
    return ''.join(html)


def go_to(target):
    """Leave this page for `target`, as a whole page: HX-Redirect for htmx, else a 303."""
    if not is_htmx():
        return redirect(target, 303)
    response = make_response('', 204)
    response.headers['HX-Redirect'] = target
    return response


# The settings menu, in SPEC order: (position, endpoint, label), filled by settings_blueprint.
SETTINGS_MENU = []


def breakable(host):
    """A host name or an email address that a narrow screen wraps after its dots (and its @),
    not in the middle of a word."""
    return Markup('<wbr>').join(escape(part) for part in re.split(r'(?<=[.@])', host))


def settings_menu():
    """The logged-in user's settings menu: (url, label, blueprint name) in SPEC order.

    Built once per handle and kept with the app: the URL map does not change while it runs,
    and building six URLs on every panel load is a tenth of what a fragment costs."""
    menus = current_app.extensions.setdefault('settings_menus', {})
    key = (current_user.handle, request.script_root)
    menu = menus.get(key)
    if menu is None:
        if len(menus) >= 10_000:
            menus.clear()
        menu = menus[key] = [(url_for(endpoint), label, endpoint.partition('.')[0])
                             for _, endpoint, label in sorted(SETTINGS_MENU)]
    return menu


def settings_blueprint(name, import_name, menu_label, menu_position, endpoint='page'):
    """A blueprint under /user/<handle>/settings that only the logged-in owner can reach.

    Its pages are the settings page around `<name>/_panel.html`, titled `menu_label`; its
    `endpoint` view is listed in the settings menu as `menu_label` at `menu_position`."""
    bp = Blueprint(name, import_name, url_prefix='/user/<handle>/settings')
    page_of(bp, 'settings/page.html', f'{name}/_panel.html', menu_label,
            around=['settings/_nav.html'])
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
            owner = HandleHold.owner(g.handle)
            if owner is None or owner.id != current_user.id:
                abort(404)
            # The user's old handle, while it is held for them: the same page, renamed.
            target = url_for(request.endpoint, **request.view_args)
            query = request.query_string.decode()
            return redirect(target + ('?' + query if query else ''),
                            301 if request.method in ('GET', 'HEAD') else 308)

    return bp


# The control characters no URL or header value holds: C0 but TAB, LF and CR, and DEL. A browser
# strips TAB, LF and CR from a URL, so a return target holding them is read as a browser reads
# it rather than refused (SPEC §12). C1 controls are left to the fields that take text: header
# values arrive as Latin-1, and UTF-8 text in one (a User-Agent naming a device) has those bytes.
CONTROL_CHARACTER = re.compile('[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]')


def control_character():
    """The first control character in this request's URL or headers, as (where it is:
    `path`, `query.<name>` or `header.<Name>`, the character), or None."""
    places = [('path', request.path)]
    places += [(f'query.{name}', name + value) for name, value in request.args.items(multi=True)]
    places += [(f'header.{name}', value) for name, value in request.headers.items()]
    for where, text in places:
        found = CONTROL_CHARACTER.search(text)
        if found:
            return where, found.group()
    return None


def _cursors():
    return URLSafeSerializer(current_app.secret_key, salt='api-next-token')


def encode_cursor(cursor):
    """A keyset cursor (created_at, id) as a signed token for a URL (`next_token`, `after`)."""
    created_at, record_id = cursor
    return _cursors().dumps([created_at.isoformat(), record_id])


def decode_cursor(token):
    """The cursor encode_cursor made `token` from, or None when it made no such token."""
    try:
        created_at, record_id = _cursors().loads(token)
        return datetime.datetime.fromisoformat(created_at), record_id
    except (BadSignature, ValueError, TypeError):
        return None


def timestamp(value):
    return value.isoformat(timespec='milliseconds') + 'Z' if value else None


def present(fields):
    """Drop the fields without a value: the API leaves them out rather than sending null."""
    return {name: value for name, value in fields.items() if value is not None}


def audit_json(record, actors):
    """One audit record with SPEC's field names, as the API and the exports show it;
    `actors` is AuditRecord.actors() of the records it is shown with."""
    actor = actors.get(record.actor_id)
    return present({
        'id': record.id, 'action_type': record.action_type, 'actor_id': record.actor_id or '',
        'actor_handle': record.actor_handle or '',
        'actor_display_name': record.actor_display_name or '',
        'actor_avatar_url': avatar_url(actor, external=True) if actor else '',
        'actor_ip': record.actor_ip or '', 'identity_id': record.identity_id,
        'identity_handle': record.identity_handle, 'target_id': record.target_id,
        'target_handle': record.target_handle, 'data': json.loads(record.data),
        'created_at': timestamp(record.created_at)})


# What a browser drops before it reads a URL (WHATWG URL standard): C0 controls and spaces at
# either end, and tabs and newlines anywhere, so "/\t/evil.example" is "//evil.example" to it.
_C0_OR_SPACE = ''.join(map(chr, range(0x21)))
_TAB_OR_NEWLINE = dict.fromkeys(map(ord, '\t\n\r'))
# Longer targets go home: inside a login address's next= they would pass no server's line limit.
TARGET_MAX = 2000
_URL_SAFE = "/!$&'()*+,;=:@%"  # WHATWG's path characters; a "%" that starts an escape stays
_STRAY_PERCENT = re.compile('%(?![0-9A-Fa-f]{2})')


def return_target(url):
    """Where a return target (`next`, HX-Current-URL, Referer) may lead: its path, query and
    fragment on this site as a browser would read them, percent-encoded; else the console home."""
    home = url_for('home.index')
    text = (url or '').strip(_C0_OR_SPACE).translate(_TAB_OR_NEWLINE)
    # Before the query a browser reads a backslash as a slash: "/\\evil.example" is a host.
    head = re.match('[^?#]*', text).group()
    text = head.replace('\\', '/') + text[len(head):]
    try:
        parts = urlsplit(text)
        # An absolute URL keeps its path only when it names exactly this host (no user name,
        # the same port): HX-Current-URL and Referer are written that way.
        if not text.startswith('/') and not (
                parts.scheme.lower() in ('http', 'https')
                and parts.netloc.lower() == request.host.lower()):
            return home
        # "//host" (urllib reads "///host" as a path) or, after this host, a path that is one.
        if text.startswith('//') or parts.path.startswith('//') or not parts.path:
            return home
        target = _encoded(parts.path, _URL_SAFE) + ''.join(
            mark + _encoded(value, _URL_SAFE + '?')
            for mark, value in (('?', parts.query), ('#', parts.fragment)) if value)
    except ValueError:  # urllib cannot read it (a broken IPv6 host), or a lone surrogate
        return home
    return target if len(target) <= TARGET_MAX else home


def _encoded(part, safe):
    return quote(_STRAY_PERCENT.sub('%25', part), safe=safe)


def recent_login_required(view):
    """For dangerous actions: unless the password was typed in this session within
    credentials.RECENT_LOGIN, ask for it first, then come back. A link comes back to itself; a
    form comes back to the page it was on (its fields are not replayed)."""
    @functools.wraps(view)
    def guarded(*args, **kwargs):
        if current_user.session.recently_authenticated:
            return view(*args, **kwargs)
        back = (request.full_path if request.method == 'GET'
                else request.headers.get('HX-Current-URL') or request.referrer)
        target = url_for('auth.reauthenticate', next=return_target(back))
        return go_to(target)
    return guarded


# Secrets that travel in URLs, which access logs write down: query parameters (a CLI login's
# `code`; `t`, the token of an email verification or an organization invitation link) and
# path segments (an unsubscribe link's token). A logged URL shows each as REDACTED.
SECRET_PARAMETERS = frozenset({'code', 't', 'token'})
SECRET_SEGMENTS = re.compile(r'(/unsubscribe/)[^/?#\s"\']+')
REDACTED = '[redacted]'
_QUERY = re.compile(r'\?([^\s"\'#]*)')
_PARAMETER = re.compile(r'([^&;=]*)(=?)([^&;]*)')


def redact_secrets(text):
    """`text` (a log line, or any part of one) with every secret in a URL in it replaced by
    [redacted]. A secret URL inside a parameter's value (a login's `next=`) goes too."""
    return _QUERY.sub(_redact_query, SECRET_SEGMENTS.sub(r'\1' + REDACTED, text))


def _redact_query(match):
    return '?' + _PARAMETER.sub(_redact_parameter, match.group(1))


def _redact_parameter(match):
    name, equals, value = match.groups()
    if not equals:
        return match.group()
    if unquote_plus(name) in SECRET_PARAMETERS:
        return name + equals + REDACTED
    inner = unquote_plus(value)
    if '/' in inner and redact_secrets(inner) != inner:  # a URL in a value, percent-encoded
        return name + equals + quote(redact_secrets(inner), safe='/')
    return match.group()


class RedactSecrets(logging.Filter):
    """A filter for a logger whose records may hold a URL (werkzeug's request log, Flask's
    "Exception on <path>"): its message and arguments are redacted before any handler sees
    them."""

    def filter(self, record):
        if isinstance(record.msg, str):
            record.msg = redact_secrets(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact_secrets(arg) if isinstance(arg, str) else arg
                                for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {key: redact_secrets(arg) if isinstance(arg, str) else arg
                           for key, arg in record.args.items()}
        return True


# One instance, so that adding it again (every create_app) leaves one on each logger.
redaction = RedactSecrets()
