"""The Penstock account-settings app: create_app() wires config, database, auth and blueprints."""
import datetime
import importlib
import logging
import os
import pkgutil
import secrets
import signal
import threading

import click
from flask import (
    Flask,
    current_app,
    g,
    make_response,
    redirect,
    render_template,
    request,
    session as flask_session,
    url_for,
)
from flask_login import current_user
from cryptography.fernet import Fernet
from flask_wtf.csrf import CSRFError
from peewee import OperationalError
from werkzeug.exceptions import NotFound, ServiceUnavailable
from werkzeug.middleware.proxy_fix import ProxyFix

import addresses
import announcements
import credentials
import database
import delivery
import embedded
import mail
import models
import postman
import propagation
import views
import watch
import workspace_servers
import workspaces
from views import (breakable, csrf, is_htmx, limiter, login_manager, return_target,
                   settings_menu)
from views.api import (
    api_error,
    http_error as api_http_error,
    problem,
    unauthorized as api_unauthorized,
)
from views.avatars import avatar_url

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self'",
    "connect-src 'self'", "form-action 'self'", "frame-ancestors 'none'", "base-uri 'none'",
    "object-src 'none'"])
# Sent with secure cookies (served over https): a browser then uses only https here for two
# years, on this host and on every host below it, so none of them can be reached over plain
# http to be impersonated. Workspace hosts (WORKSPACE_DOMAIN) are PostgreSQL endpoints, which
# HSTS does not touch, so includeSubDomains locks nothing out there.
STRICT_TRANSPORT_SECURITY = 'max-age=63072000; includeSubDomains'
# What a document (a page, not a file it loads) carries besides.
DOCUMENT_HEADERS = (('Content-Security-Policy', CONTENT_SECURITY_POLICY),
                    ('Referrer-Policy', 'same-origin'), ('X-Frame-Options', 'DENY'),
                    ('Cross-Origin-Opener-Policy', 'same-origin'))
DEMO_EMAIL, DEMO_HANDLE, DEMO_PASSWORD = 'demo@penstock.test', 'demo', 'penstock-demo'
DEMO_HANDLES = (DEMO_HANDLE,) + tuple(f'{DEMO_HANDLE}{n}' for n in range(2, 10))
DEMO_WORKSPACES = ('analytics', 'staging')
BUSY_MESSAGE = 'Penstock is busy. Try again in a moment; nothing was changed.'
BUSY_RETRY_AFTER = 1  # seconds: locks are held for milliseconds


def create_app(config=None):
    """Build the app; `config` overrides what the environment says (the tests use it)."""
    app = Flask(__name__, instance_relative_config=True)
    os.makedirs(app.instance_path, exist_ok=True)
    app.config.from_mapping(
        SECRET_KEY=os.environ.get('SECRET_KEY'),
        DATABASE_URL=os.environ.get(
            'DATABASE_URL', 'sqlite:///' + os.path.join(app.instance_path, 'penstock.db')),
        SESSION_COOKIE_PATH='/',  # a __Host- cookie must be for the whole site
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE='Lax',
        SESSION_COOKIE_SECURE=_env_flag('SECURE_COOKIES', default=not app.debug),
        PERMANENT_SESSION_LIFETIME=datetime.timedelta(days=14),  # idle, then logged out
        SESSION_ABSOLUTE_LIFETIME=datetime.timedelta(days=30),  # however busy, from login
        # The cookie is sent again when the session's row is touched (once a minute, see
        # load_user), not on every answer.
        SESSION_REFRESH_EACH_REQUEST=False,
        WTF_CSRF_TIME_LIMIT=None,  # the token is bound to the session, which expires itself
        RATELIMIT_STORAGE_URI=os.environ.get('RATELIMIT_STORAGE_URI', 'memory://'),
        RATELIMIT_HEADERS_ENABLED=True,
        # A shared store that cannot be reached (Redis down) is no reason to refuse logins:
        # each process counts in its own memory until the store answers again.
        RATELIMIT_IN_MEMORY_FALLBACK_ENABLED=True,
        # Flask-Limiter's decorators count in fixed windows, as throttle.py's counters do.
        RATELIMIT_STRATEGY='fixed-window',
        # Wrong passwords, see throttle.py: from browsers without this account's device cookie
        # per account and per IP; per device cookie (or, re-authenticating, per session).
        LOGIN_FAILURES_PER_ACCOUNT='10 per 10 minutes',
        LOGIN_FAILURES_PER_IP='100 per 10 minutes',
        LOGIN_FAILURES_PER_DEVICE='10 per 10 minutes',
        SIGNUP_FAILURES_PER_IP='30 per 10 minutes',
        SIGNUPS_PER_IP='60 per minute',
        # Handles found taken (preview or change), per user; per IP with SIGNUP_FAILURES_PER_IP.
        HANDLE_LOOKUPS_PER_USER='30 per 10 minutes',
        MAX_CONTENT_LENGTH=1024 * 1024,  # views that take uploads allow more, see _body_limit
        AVATAR_UPLOADS_PER_USER='10 per minute',  # the page's and the API's together
        # Rotate Password, the page's and the API's together (each sends a System email).
        PASSWORD_ROTATIONS_PER_USER=os.environ.get('PASSWORD_ROTATIONS_PER_USER', '5 per hour'),
        # Unsubscribe links that are not valid, per IP (valid ones are not counted).
        UNSUBSCRIBE_FAILURES_PER_IP='30 per minute',
        GRAVATAR_ENABLED=_env_flag('GRAVATAR_ENABLED', default=True),
        GRAVATAR_URL=os.environ.get('GRAVATAR_URL', 'https://gravatar.com/avatar/'),
        GRAVATAR_TIMEOUT=float(os.environ.get('GRAVATAR_TIMEOUT', '3')),
        WORKSPACE_DOMAIN=os.environ.get('WORKSPACE_DOMAIN', 'workspaces.penstock.test'),
        # Admin URLs of the PostgreSQL servers that hold workspaces, comma-separated; unset,
        # an embedded server under instance/ (started by whatever runs a worker).
        WORKSPACE_DATABASE_URL=os.environ.get('WORKSPACE_DATABASE_URL', ''),
        # How a connection string reaches a workspace: `direct` (the server's own port, and
        # hostaddr= its address) or `dns` (the names resolve, to the servers or a pooler that
        # routes by name, on WORKSPACE_PORT). See docs/operations.md.
        WORKSPACE_ROUTING=os.environ.get('WORKSPACE_ROUTING', 'direct'),
        WORKSPACE_PORT=int(os.environ.get('WORKSPACE_PORT', '9193')),
        # What one tenant may take of a shared server: connections at once per role and per
        # database, temporary files per session (a size, or -1). See docs/operations.md.
        WORKSPACE_CONNECTION_LIMIT=os.environ.get('WORKSPACE_CONNECTION_LIMIT', '20'),
        WORKSPACE_TEMP_FILE_LIMIT=os.environ.get('WORKSPACE_TEMP_FILE_LIMIT', '1GB'),
        # werkzeug's method string for new password hashes: scrypt at its default cost
        # (n=2**15); a check reads the cost from the hash it checks, so it can be raised later.
        PASSWORD_HASH_METHOD=os.environ.get('PASSWORD_HASH_METHOD', 'scrypt'),
        # Comma-separated Fernet keys, newest first; the first encrypts, all decrypt.
        DATABASE_PASSWORD_KEYS=os.environ.get('DATABASE_PASSWORD_KEYS'),
        PROPAGATION_LEASE=float(os.environ.get('PROPAGATION_LEASE', '120')),
        PROPAGATION_POLL=float(os.environ.get('PROPAGATION_POLL', '1')),
        PROPAGATION_WORKER_THREAD=_env_flag('PROPAGATION_WORKER_THREAD', default=False),
        # How often a worker checks each workspace server (watch.py): passwords set from
        # inside put back, and transactions idle past the timeout (seconds) ended.
        WORKSPACE_CHECK_INTERVAL=float(os.environ.get('WORKSPACE_CHECK_INTERVAL', '30')),
        WORKSPACE_IDLE_TRANSACTION_TIMEOUT=float(
            os.environ.get('WORKSPACE_IDLE_TRANSACTION_TIMEOUT', '600')),
        # Mail (postman.py): SMTP_URL unset keeps each message in instance/outbox/ instead.
        SMTP_URL=os.environ.get('SMTP_URL', ''),
        MAIL_FROM=os.environ.get('MAIL_FROM', postman.DEFAULT_MAIL_FROM),
        PUBLIC_URL=os.environ.get('PUBLIC_URL', 'http://127.0.0.1:5000'),  # links in mail
        # A worker holds a message this long (longer than an SMTP conversation can take).
        MAIL_LEASE=float(os.environ.get('MAIL_LEASE', '300')),
        MAIL_POLL=float(os.environ.get('MAIL_POLL', '1')),
        MAIL_WORKER_THREAD=_env_flag('MAIL_WORKER_THREAD', default=False),
    )
    if config:
        app.config.update(config)
    # Over https, cookie names start with __Host-: a browser then keeps such a cookie only if
    # it came over https from this very host for every path, so neither plain http nor a
    # neighbouring subdomain can plant or overwrite it. Each cookie of ours takes this prefix.
    app.config['COOKIE_PREFIX'] = '__Host-' if app.config['SESSION_COOKIE_SECURE'] else ''
    app.config['SESSION_COOKIE_NAME'] = app.config['COOKIE_PREFIX'] + 'penstock_session'
    if not app.config['SECRET_KEY']:
        app.config['SECRET_KEY'] = _persisted_secret(app.instance_path)
    proxies = int(os.environ.get('TRUSTED_PROXIES', '0'))
    if proxies:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies)

    keys = app.config['DATABASE_PASSWORD_KEYS'] or _persisted_secret(
        app.instance_path, 'database_password_key', lambda: Fernet.generate_key().decode())
    database.use_keys([key.strip() for key in keys.split(',') if key.strip()])
    models.Config.workspace_domain = app.config['WORKSPACE_DOMAIN']
    models.Config.workspace_servers = _workspace_servers(app)
    models.Config.password_hash_method = app.config['PASSWORD_HASH_METHOD']
    models.Config.secret_key = app.config['SECRET_KEY']
    postman.configure(app.config)
    announcements.Config.secret_key = app.config['SECRET_KEY']
    _init_database(app)
    app.before_request(_refuse_control_characters)
    app.before_request(_body_limit)  # before CSRF's check, which reads the body
    login_manager.init_app(app)
    csrf.init_app(app)
    _init_limiter(app)
    delivery.init_app(app)  # hashed static names, compression

    for module in _view_modules():
        app.register_blueprint(module.bp)
    mail.Config.url_map = app.url_map  # for the links in messages, which need no request
    app.jinja_env.globals.update(settings_menu=settings_menu, avatar_url=avatar_url)
    app.jinja_env.filters.update(day=models.day, breakable=breakable)

    app.after_request(_security_headers)
    app.register_error_handler(429, _too_many_requests)
    app.register_error_handler(CSRFError, _csrf_failed)
    app.register_error_handler(404, _not_found)
    app.register_error_handler(OperationalError, _database_busy)
    app.register_error_handler(database.CredentialRevoked, _credential_revoked)
    app.cli.add_command(migrate_command)
    app.cli.add_command(demo_command)
    app.cli.add_command(worker_command)
    app.cli.add_command(reencrypt_command)
    app.cli.add_command(announce_command)
    app.cli.add_command(workspaces_group)
    if app.config['PROPAGATION_WORKER_THREAD'] or app.config['MAIL_WORKER_THREAD']:
        _show_worker_log()
    if app.config['PROPAGATION_WORKER_THREAD']:
        app.extensions['propagation_stop'] = propagation.start_thread(app.config)
        watch.start_thread(app.config, app.extensions['propagation_stop'])
    if app.config['MAIL_WORKER_THREAD']:
        app.extensions['mail_stop'] = postman.start_thread(app.config, app.instance_path)
    _redact_logged_urls(app)
    return app


def _redact_logged_urls(app):
    """No secret in a URL reaches a log line (SPEC §12): the loggers that write URLs
    (werkzeug's request log, gunicorn's access log, Flask's "Exception on <path>") redact
    them first (views.redact_secrets)."""
    for logger in (logging.getLogger('werkzeug'), logging.getLogger('gunicorn.access'),
                   app.logger):
        logger.addFilter(views.redaction)


def _show_worker_log():
    """Print the workers' INFO lines (a message kept in the outbox: its recipient and
    subject; workspaces placed) on stderr, as the server's log, unless logging is configured
    already (a deployment's own, or the test runner's)."""
    if logging.getLogger().handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter('%(asctime)s %(name)s: %(message)s'))
    for name in ('postman', 'propagation', 'watch'):
        logger = logging.getLogger(name)
        if not logger.handlers:
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)


def _view_modules():
    """Every module in views/; each has one blueprint, `bp`."""
    return [importlib.import_module(f'views.{info.name}')
            for info in pkgutil.iter_modules(views.__path__)]


def _refuse_control_characters():
    """A URL or header holding a control character is malformed (SPEC §12): a 400 that says
    so, before a view or the database reads it."""
    found = views.control_character()
    if found is None:
        return None
    where, character = found
    code = f'U+{ord(character):04X}'
    if request.path.startswith('/api/'):
        return problem(400, 'Bad Request', 'A URL or header holding a control character is '
                                           'malformed; nothing was done.',
                       [(where, f'holds the control character {code}')])
    return render_template('error.html', title='Bad request',
                           message=f'This address or a header sent with it holds a control '
                                   f'character ({code}), so nothing was done. Check the link '
                                   'and try again.'), 400


def _body_limit():
    """A view marked with `max_content_length` (an upload) may take a larger body."""
    limit = getattr(current_app.view_functions.get(request.endpoint), 'max_content_length', None)
    if limit:
        request.max_content_length = limit


# Flask-Limiter's limits for every request, which its before-request check would apply and
# _init_limiter has it skip: refused, so that none is set and silently not applied.
APP_WIDE_LIMITS = ('RATELIMIT_DEFAULT', 'RATELIMIT_APPLICATION', 'RATELIMIT_META')


def _init_limiter(app):
    """Flask-Limiter, its check before each request told there is nothing for it to do.

    Every limit of ours is a decorator on its view, checked when the view is called, or a
    throttle.py counter. Flask-Limiter's before-request check looks for app-wide, default, meta
    and blueprint limits, of which there are none (a limit goes on each view of a blueprint, not
    on the blueprint), and resolving them is most of its cost (docs/benchmarks.md). So a hook
    of ours, registered just after Flask-Limiter's, marks that its check is over, and its
    public request filter exempts the request until then (see _before_view): a view's own
    limits, checked later, are checked in full, and so is everything should Flask-Limiter ever
    run its check after ours.

    While the shared store is down, Flask-Limiter notices it coming back on the next request
    to a view that has a limit of its own, the only requests its state matters to."""
    for name in APP_WIDE_LIMITS:
        if app.config.get(name):
            raise RuntimeError(f'{name} is set: Penstock puts each rate limit on its view '
                               '(limiter.limit), and has no limit for every request')
    limiter.init_app(app)
    app.before_request(_limiter_check_done)


def _limiter_check_done():
    """Flask-Limiter's before-request check is over: from now on its limits apply."""
    g.limiter_check_done = True


@limiter.request_filter
def _before_view():
    """Flask-Limiter's request filter: True (no limit applies now) until _limiter_check_done."""
    return not g.get('limiter_check_done', False)


def _env_flag(name, default):
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() not in ('0', 'false', 'no', 'off', '')


def _persisted_secret(instance_path, name='secret_key', make=lambda: secrets.token_hex(32)):
    """A key kept in instance/<name>, made on first use (readable by us only)."""
    path = os.path.join(instance_path, name)
    try:
        with open(path) as f:
            return f.read().strip()
    except FileNotFoundError:
        key = make()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, 'w') as f:
            f.write(key)
        return key


def _workspace_servers(app):
    """The servers WORKSPACE_DATABASE_URL names, or the embedded one under instance/."""
    routing = app.config['WORKSPACE_ROUTING']
    if routing not in ('direct', 'dns'):
        raise RuntimeError(f'WORKSPACE_ROUTING is {routing!r}: use direct or dns')
    try:
        limits = workspace_servers.Limits.parse(app.config['WORKSPACE_CONNECTION_LIMIT'],
                                                app.config['WORKSPACE_TEMP_FILE_LIMIT'])
    except ValueError as error:
        raise RuntimeError(str(error)) from None
    urls = [url.strip() for url in app.config['WORKSPACE_DATABASE_URL'].split(',')
            if url.strip()]
    if urls:
        servers = [workspace_servers.Server(url, limits=limits) for url in urls]
    else:
        servers = [workspace_servers.EmbeddedServer(embedded.EmbeddedPostgres(
            os.path.join(app.instance_path, 'workspace-postgres'),
            connection_limit=limits.connections), limits)]
    return workspace_servers.Servers(servers, routing, app.config['WORKSPACE_PORT'], limits)


def _init_database(app):
    database.db.initialize(database.open_database(app.config['DATABASE_URL']))

    @app.before_request
    def connect():
        database.db.connect(reuse_if_open=True)

    @app.teardown_request
    def close(exc):
        database.act_as(None)  # this thread's next request must not act by this credential
        if not database.db.is_closed():
            database.db.close()


@login_manager.user_loader
def load_user(secret):
    if g.get('database_busy'):  # see _database_busy
        return None
    session = credentials.Session.lookup(secret, current_app.config['PERMANENT_SESSION_LIFETIME'],
                                         current_app.config['SESSION_ABSOLUTE_LIFETIME'])
    if session is None:
        return None
    if session.touched:
        flask_session.modified = True  # the cookie's expiry moves on with the row's last use
    database.act_as(session)
    user = session.user
    user.session = session
    return user


@login_manager.unauthorized_handler
def unauthorized():
    """Send the visitor to log in; htmx is told to leave the page rather than swap it."""
    if is_htmx():
        # A link leads back to where it pointed, a form to the page it was on.
        wanted = (request.full_path if request.method == 'GET'
                  else request.headers.get('HX-Current-URL'))
        target = url_for('auth.login', next=return_target(wanted))
        response = make_response('', 401)
        response.headers['HX-Redirect'] = target
        return response
    return redirect(url_for('auth.login', next=return_target(request.full_path)))


def _security_headers(response):
    """The headers every answer carries, unless its view set its own. One pass over the
    answer's headers: each setdefault() would be one more."""
    wanted = [('X-Content-Type-Options', 'nosniff')]
    if current_app.config['SESSION_COOKIE_SECURE']:  # served over https: stay there
        wanted.append(('Strict-Transport-Security', STRICT_TRANSPORT_SECURITY))
    if delivery.is_asset(response):
        # A stylesheet, script or image is not a document: a policy, framing rules or an
        # opener policy on it would do nothing, and they cost ~600 bytes on each file.
        if response.mimetype == 'image/svg+xml':
            wanted.append(('Content-Security-Policy', delivery.SVG_CONTENT_SECURITY_POLICY))
    else:
        wanted += DOCUMENT_HEADERS
        if request.endpoint != 'static' and current_user.is_authenticated:
            wanted.append(('Cache-Control', 'no-store'))  # account pages stay out of caches
    headers = response.headers
    present = {name.lower() for name, _ in headers}
    headers.extend([(name, value) for name, value in wanted if name.lower() not in present])
    return response


def _too_many_requests(error):
    """429: say plainly what happened and when to try again."""
    return render_template('error.html', title='Too many requests',
                           message='Too many requests. Wait a minute, then try again.'), 429


def _not_found(error):
    """404 as a page of ours; under /api/ as the API's error object."""
    if request.path.startswith('/api/'):
        return api_http_error(error)
    message = (error.description if error.description != NotFound.description
               else 'There is nothing here, or it is not yours to see.')
    return render_template('error.html', title='Page not found', message=message), 404


def _database_busy(error):
    """503 with Retry-After when the database stayed locked past its busy timeout (SQLite's
    "database is locked", or "database table is locked"): the transaction that met the lock is
    rolled back, so nothing was changed and the request can be sent again. Any other
    OperationalError is a fault, and stays one."""
    if 'is locked' not in str(error):
        raise error
    if request.path.startswith('/api/'):
        response = api_http_error(ServiceUnavailable(BUSY_MESSAGE))
    else:
        # If the lock struck while the session was being looked up, rendering the page would
        # look it up again (Flask-Login asks load_user until it gets an answer): from now on
        # load_user answers None, so the page is a visitor's.
        g.database_busy = True
        response = make_response(render_template('error.html', title='Penstock is busy',
                                                 message=BUSY_MESSAGE), 503)
    response.headers['Retry-After'] = str(BUSY_RETRY_AFTER)
    return response


def _credential_revoked(error):
    """The session or token was revoked while this request ran, and nothing was written: as
    if it had been gone from the start (the API's 401, or off to log in again)."""
    if request.path.startswith('/api/'):
        return api_error(api_unauthorized())
    if is_htmx():
        return unauthorized()
    return redirect(url_for('auth.login'))


def _csrf_failed(error):
    """400: the form's security token is missing or stale; nothing was changed."""
    return render_template('error.html', title='Form expired',
                           message='This form has expired or did not come from Penstock, so '
                                   'nothing was changed. Reload the page and try again.',
                           reason=error.description), 400


@click.command('migrate')
def migrate_command():
    """Create the database or bring it up to date."""
    applied = database.migrate(database.db.obj)
    click.echo('Applied migrations: ' + ', '.join(applied) if applied
               else 'The database is up to date.')


@click.command('demo')
def demo_command():
    """Create the demo user when the database has no users, and print a login that works, or
    that none was made."""
    with database.db.connection_context():
        empty = not models.User.select().exists()
        if empty:
            _make_demo_user()
        demo = models.User.get_or_none(models.User.email == DEMO_EMAIL)
    if demo is not None:
        click.echo(f'Demo login: {DEMO_EMAIL} (or {demo.handle}) / password {DEMO_PASSWORD}')
    elif empty:
        click.echo(f'No demo user was made: the handles {DEMO_HANDLES[0]} to {DEMO_HANDLES[-1]} '
                   'are all held after deleted accounts. Sign up to log in.')
    else:
        click.echo('No demo user was made: the database has users already. Log in as one of '
                   'them, or sign up.')


def _make_demo_user():
    """Make the demo user, with workspaces, on the first free handle of demo, demo2, … demo9
    (a deleted demo account's handle stays held for a while, HANDLE_HOLD); none when all are
    held."""
    handle = next((handle for handle in DEMO_HANDLES if models.handle_problem(handle) is None),
                  None)
    if handle is None:
        return
    user = addresses.mark_verified(models.User.sign_up(DEMO_EMAIL, handle, DEMO_PASSWORD))
    user.set_display_name('Demo User')
    for workspace in DEMO_WORKSPACES:
        workspaces.Workspace.provision(user, workspace)


@click.command('worker')
def worker_command():
    """Carry workspace changes (new and deleted workspaces, rotated passwords, new handles,
    deleted accounts) to the workspace servers, check the servers (watch.py), and send the
    outbox's mail, until stopped (Ctrl-C, SIGTERM): one thread each, each finishing what it
    has in hand."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    _show_worker_log()
    lease, poll = propagation.settings(current_app.config)
    servers = propagation.start_servers()
    sender = postman.transport(current_app.config, current_app.instance_path)
    mail_lease, mail_poll = postman.settings(current_app.config)
    mailing = threading.Thread(target=postman.run, name='postman',
                               args=(sender, mail_lease, mail_poll, stop))
    click.echo('Propagation worker started.')
    checking = watch.start_thread(current_app.config, stop)
    click.echo('Workspace server check started: every '
               f'{current_app.config["WORKSPACE_CHECK_INTERVAL"]:g} s.')
    mailing.start()
    click.echo(f'Mail worker started: sending to {sender}.')
    try:
        propagation.run(servers, lease, poll, stop)
    except KeyboardInterrupt:
        stop.set()
    checking.join()
    click.echo('Workspace server check stopped.')
    mailing.join()
    click.echo('Mail worker stopped.')
    click.echo('Propagation worker stopped.')


@click.group('workspaces')
def workspaces_group():
    """Workspace servers: check them against the metadata."""


@workspaces_group.command('check')
def check_command():
    """Compare every workspace with its server (database, role, password) and queue a job
    for whatever differs; a worker then repairs it. Prints what it found."""
    servers = models.Config.workspace_servers
    started = [server for server in servers if not server.running]
    for server in started:  # the embedded server, when no `make run` has it running
        server.start()
    try:
        with database.db.connection_context():
            for line in propagation.check(servers):
                click.echo(line)
    finally:
        for server in started:
            server.stop()


@click.command('reencrypt-passwords')
def reencrypt_command():
    """Encrypt every database password with the first DATABASE_PASSWORD_KEYS key."""
    with database.db.connection_context():
        count = database.reencrypt(workspaces.DatabasePassword.ciphertext)
    click.echo(f'Re-encrypted {count} database password{"s" if count != 1 else ""} with the '
               'first key.')


@click.command('announce')
@click.option('--topic', required=True, type=click.Choice(list(announcements.TOPICS)),
              help='Who gets it: every user with this topic on.')
@click.option('--subject', required=True, help='The subject line.')
@click.option('--body-file', required=True, type=click.File(encoding='utf-8'),
              help='The message, as plain text (paragraphs apart by a blank line).')
@click.option('--dry-run', is_flag=True, help='Count who would get it; queue nothing.')
def announce_command(topic, subject, body_file, dry_run):
    """Queue an announcement to every user who has TOPIC on, and print how many. Running it
    again with the same topic, subject and body queues it only to those not queued before."""
    subject = subject.strip()
    if not subject or len(subject) > announcements.SUBJECT_MAX or models.text_problem(subject):
        raise click.BadParameter(f'one line of 1–{announcements.SUBJECT_MAX} characters, '
                                 'without control characters', param_hint='--subject')
    try:
        body = body_file.read().replace('\r\n', '\n').strip()
    except UnicodeDecodeError:
        raise click.BadParameter('the file is not UTF-8 text', param_hint='--body-file') from None
    problem = models.text_problem(body.replace('\n', '').replace('\t', ''))
    if not body or problem:
        raise click.BadParameter(problem or 'the file is empty', param_hint='--body-file')
    with database.db.connection_context():
        count = announcements.announce(topic, subject, body, dry_run)
    plural = 's' if count != 1 else ''
    click.echo(f'Would queue {count} message{plural} (dry run).' if dry_run
               else f'Queued {count} message{plural}.')
