"""hypothesis on every form endpoint: hostile fields give a 4xx with a message or a normal
success, never a 5xx, and nothing is saved half-way.

The endpoints are every POST rule of app.url_map outside /api/ (a test keeps the list equal to
the url_map, so a new form is fuzzed too). Each is sent generated forms, as a page and as an
htmx request, from a browser whose login is recent (so dangerous actions reach their logic)
with a valid CSRF token (so the forgery check, tested in test_security.py, does not stop them
first). Examples are derandomized and few, to keep the whole file to about a minute."""
import io
import itertools
import string
import unicodedata
import urllib.parse

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image
from werkzeug.datastructures import MultiDict
from werkzeug.test import EnvironBuilder

import announcements
import credentials
import database
import models
import workspaces
from tests.helpers import HTMX, PASSWORD, every_model, html, log_in, make_user

pytestmark = pytest.mark.slow  # hypothesis fuzzing

EXAMPLES = 20
# Forms for visitors, fuzzed logged out (unsubscribe: the link in an email).
ANONYMOUS = {'auth.login', 'auth.signup', 'unsubscribe.unsubscribe'}
FORM_ENDPOINTS = sorted(ANONYMOUS | {
    'advanced.change_handle', 'advanced.delete_account', 'advanced.reset',
    'advanced.revoke_session', 'auth.logout', 'auth.reauthenticate',
    'auth.resend_verification', 'cli_login.decline',
    'cli_login.verify', 'home.copy', 'home.create', 'home.delete', 'home.reveal',
    'notifications.save', 'profile.cancel_avatar', 'profile.preview_crop', 'profile.reset_avatar',
    'profile.change_email', 'profile.reveal_password', 'profile.rotate_password',
    'profile.save_avatar',
    'profile.save_name', 'profile.upload_avatar', 'tokens.activate', 'tokens.create',
    'tokens.deactivate', 'tokens.delete'})
NOTIFICATIONS = [name for name, _, _ in models.Preferences.CHOICES]
FIELDS = ['email', 'new_email', 'handle', 'password', 'display_name', 'confirm', 'previewed',
          'upload', 'x', 'y', 'size', 'next', 'avatar', *NOTIFICATIONS]
PLAUSIBLE = ['', ' ', '0', '1', '-1', '1e309', 'NaN', 'alice', 'Alice', 'alice@example.com',
             PASSWORD, 'on', 'analytics', 'new-handle', 'admin', '../../etc/passwd',
             '//evil.test/', 'https://evil.test/', '<script>alert(1)</script>', "' OR 1=1 --",
             '\x00', 'ａｌｉｃｅ', 'İ', 'ß', '\u202e', '\u200b', '\ufeff', '😀' * 30, 'x' * 101,
             'a' * 40, 'a--b', '9' * 40, 'ali\x00ce', 'alice\x00@example.com', '\x1b[2J', '\x7f',
             '\x85', 'a\u2028b', '\ue000', '\u0378', '\U000E0041', '\ufffe']
# Characters no text field takes: controls, format and private-use characters, line and
# paragraph separators, unassigned code points.
REFUSED = st.characters(categories=['Cc', 'Cf', 'Co', 'Cn', 'Zl', 'Zp'])
# Every kind of character, text with refused characters among plausible ones, lone surrogates
# (a form carries one only as its UTF-8 bytes), bytes that are not UTF-8, and values far past
# every limit but under the 1 MB body cap.
VALUE = st.one_of(
    st.sampled_from(PLAUSIBLE),
    st.text(max_size=60),
    st.text(st.characters(codec='utf-8'), max_size=200),
    st.tuples(st.sampled_from(PLAUSIBLE), REFUSED, st.sampled_from(PLAUSIBLE)).map(''.join),
    st.text(st.characters(categories=['Cs']), min_size=1, max_size=3).map(
        lambda lone: b'alice' + lone.encode('utf-8', 'surrogatepass')),
    st.binary(max_size=40),
    st.integers(min_value=1_000, max_value=300_000).map(lambda n: 'ä' * n),
)
NAME = st.one_of(st.sampled_from(FIELDS), st.text(string.printable, min_size=1, max_size=12))
CURRENT_HANDLE = object()  # stands for the browser's own handle, known only when sent
CURRENT_UPLOAD = object()  # stands for a pending avatar upload of the browser's, made then


def png():
    out = io.BytesIO()
    Image.new('RGB', (64, 48), (40, 90, 160)).save(out, 'PNG')
    return out.getvalue()


PNG = png()
AVATAR = st.one_of(st.just(PNG), st.just(PNG[:60]), st.binary(max_size=300))
# Values each field's rules accept, so accepted forms (and what they save) are checked too.
VALID = {
    'display_name': st.text(st.characters(codec='utf-8', exclude_categories=[
        'Cc', 'Cf', 'Cs', 'Zl', 'Zp', 'Co', 'Cn']), min_size=1, max_size=100),
    'handle': st.from_regex(r'[a-z0-9]{1,12}', fullmatch=True),
    'email': st.from_regex(r'[a-z0-9.+]{1,20}', fullmatch=True).map(lambda s: s + '@example.com'),
    'password': st.one_of(st.just(PASSWORD), st.text(min_size=8, max_size=40)),
    'previewed': st.just('1'),
    'confirm': st.just(CURRENT_HANDLE),
    'upload': st.just(CURRENT_UPLOAD),
    **{name: st.integers(0, 500).map(str) for name in ('x', 'y', 'size')},
    **{name: st.just('on') for name in NOTIFICATIONS},
}
VALID_FOR = {('auth.login', 'email'): st.sampled_from(['alice', 'alice@example.com',
                                                      ' ALICE@Example.com '])}
FIELDS_OF = {
    'auth.signup': ['email', 'handle', 'password'], 'auth.login': ['email', 'password'],
    'auth.reauthenticate': ['password', 'next'], 'home.create': ['handle'],
    'advanced.change_handle': ['handle', 'previewed'], 'advanced.delete_account': ['confirm'],
    'notifications.save': NOTIFICATIONS, 'profile.save_name': ['display_name'],
    'profile.save_avatar': ['upload', 'x', 'y', 'size'], 'profile.cancel_avatar': ['upload'],
    'profile.preview_crop': ['upload', 'x', 'y', 'size'], 'profile.change_email': ['new_email'],
}


def tainted(valid):
    """A valid value with a refused character slipped in: only that keeps it from being valid."""
    return st.tuples(valid, REFUSED, st.integers(0, 100)).map(
        lambda drawn: drawn[0][:drawn[2]] + drawn[1] + drawn[0][drawn[2]:]
        if isinstance(drawn[0], str) else drawn[0])


def form_of(endpoint):
    """The endpoint's own fields: all valid, or each valid, valid but for one refused
    character, hostile or missing; then perhaps a few strangers (unknown or repeated fields)."""
    names = FIELDS_OF.get(endpoint, [])
    valids = [VALID_FOR.get((endpoint, name), VALID.get(name, VALUE)) for name in names]
    valid = st.tuples(*valids)
    mixed = st.tuples(*[st.one_of(st.none(), ok, tainted(ok), VALUE) for ok in valids])
    strangers = st.lists(st.tuples(NAME, VALUE), max_size=3)
    return st.tuples(st.one_of(valid, mixed), st.one_of(st.just([]), strangers)).map(
        lambda drawn: [(name, value) for name, value in zip(names, drawn[0])
                       if value is not None] + drawn[1])


ID = st.one_of(st.just('real'), st.text(string.ascii_letters + string.digits + '_-.~',
                                        min_size=1, max_size=30))


def form_rules(app):
    return {rule.endpoint: rule for rule in app.url_map.iter_rules()
            if 'POST' in (rule.methods or ()) and not rule.rule.startswith('/api/')}


def as_read(body):
    """The form as the app reads it from `body` (werkzeug's decoding of what was sent)."""
    return EnvironBuilder(method='POST', data=body,
                          content_type='application/x-www-form-urlencoded').get_request().form


def snapshot():
    """Every row of every table but the ones a request may touch on its own (sessions are
    touched for their last-active time, logins record the attempt), and but the audit
    records of wrong passwords (a refused login or re-authentication is recorded)."""
    def rows(model):
        query = model.select()
        if model is models.AuditRecord:
            query = query.where(model.action_type != 'user.login.failed')
        return sorted(map(repr, query.tuples()))

    with database.db.connection_context():
        return {model.__name__: rows(model) for model in every_model()
                if model is not credentials.Session}


class Browser:
    """A person's browser, logged in (with a recent login) unless anonymous; it starts again
    (logging in, or signing up when the account was deleted) whenever the fuzz logged it out."""

    accounts = itertools.count()

    def __init__(self, app, anonymous):
        self.app, self.anonymous = app, anonymous
        self.client = app.test_client()
        self.user = None
        self.csrf = None

    def ready(self):
        if self.anonymous:
            self.client = self.app.test_client()
            self.csrf = html(self.client.get('/login')).find(
                'input', attrs={'name': 'csrf_token'})['value']
            return
        with database.db.connection_context():
            self.user = self.user and models.User.get_or_none(models.User.id == self.user.id)
        if self.user is None:
            n = next(self.accounts)
            self.user = make_user(f'fuzz{n}@example.com', f'fuzz{n}')
            with database.db.connection_context():
                workspaces.Workspace.provision(self.user, 'analytics')
            self.client = self.app.test_client()
        if '/login' in self.client.get('/settings').headers.get('Location', '/login'):
            self.client = self.app.test_client()
            assert log_in(self.client, self.user.handle).status_code == 302
        page = html(self.client.get(f'/user/{self.user.handle}/settings/profile'))
        self.csrf = page.find('input', attrs={'name': 'csrf_token'})['value']

    def own(self, value):
        """`value`, or what a stand-in names: the handle, or a fresh pending upload's
        reference (made through the upload step, as a person's browser gets one)."""
        if value is CURRENT_HANDLE:
            return self.user.handle
        if value is CURRENT_UPLOAD:
            response = self.client.post(
                f'/user/{self.user.handle}/settings/profile/avatar',
                data={'avatar': (io.BytesIO(PNG), 'a.png'), 'csrf_token': self.csrf})
            return urllib.parse.parse_qs(
                urllib.parse.urlsplit(response.headers['Location']).query)['upload'][0]
        return value

    def real_ids(self):
        """A live object of each kind the URLs name, so a generated request can land."""
        with database.db.connection_context():
            user = models.User.get_by_id(self.user.id) if self.user else None
            ids = {'request_id': credentials.LoginRequest.start('192.0.2.1').id}
            someone = models.User.select().first()
            if someone:  # an unsubscribe link works for whoever holds it
                ids['token'] = announcements.unsubscribe_token(someone.id, 'product_updates')
            if user:
                ids['session_id'] = credentials.Session.sign_in(user, '192.0.2.9', 'Other').id
                token = credentials.Token.select().where(credentials.Token.user == user).first()
                ids['token_id'] = token.id if token else credentials.Token.issue(user)[0].id
                workspace = workspaces.Workspace.select().where(
                    workspaces.Workspace.user == user).first()
                ids['workspace_id'] = workspace.id if workspace else 'w_none'
                ids['handle'] = user.handle
        return ids


def test_every_form_endpoint_is_fuzzed(app):
    assert sorted(form_rules(app)) == FORM_ENDPOINTS


def state():
    """What the invariants below compare: the user's name, handle, hosts, preferences."""
    with database.db.connection_context():
        users = {user.id: (user.display_name, user.handle) for user in models.User.select()}
        hosts = {w.id: (w.user_id, w.host()) for w in workspaces.Workspace.select()}
        prefs = {p.user_id: {name: getattr(p, name) for name in NOTIFICATIONS}
                 for p in models.Preferences.select()}
    return users, hosts, prefs


def refused_character_in(text):
    """A character no text field keeps: a control, private-use, unassigned or surrogate code
    point, a line or paragraph separator, or a format character but the zero-width joiners and
    the tags that make a region's flag."""
    for character in text or '':
        category = unicodedata.category(character)
        if category in ('Cc', 'Co', 'Cn', 'Cs', 'Zl', 'Zp') or (
                category == 'Cf' and character not in '\u200c\u200d'
                and not '\U000E0020' <= character <= '\U000E007F'):
            return character
    return None


def check_nothing_half_saved(endpoint, form, response, user_id, before, after):
    """An accepted form changed exactly what it said, and kept no refused character (a
    refused one changed nothing at all: checked on every row by the caller)."""
    users, hosts, prefs = before
    users_after, hosts_after, prefs_after = after
    ok = response.status_code < 400
    for account in users_after.values():
        assert not refused_character_in(' '.join(filter(None, account))), (endpoint, account)
    if endpoint == 'profile.save_name' and ok:
        assert (users_after[user_id][0] or '') == form.get('display_name', '').strip()
    if endpoint == 'advanced.change_handle' and ok and users_after[user_id][1] != users[user_id][1]:
        new = users_after[user_id][1]
        assert new == form.get('handle', '').strip().lower()
        assert form.get('previewed') == '1'
        with database.db.connection_context():  # the old handle is held for its owner
            assert models.HandleHold.get(models.HandleHold.handle == users[user_id][1]
                                         ).user_id == user_id
    if endpoint == 'notifications.save' and ok:
        assert prefs_after[user_id] == {name: name in form for name in NOTIFICATIONS}
    if endpoint == 'auth.signup':
        created = [u for u in users_after if u not in users]
        assert len(created) == (1 if ok else 0), response.status_code
        if created:
            with database.db.connection_context():
                account = models.User.get_by_id(created[0])
            assert account.email == models.normalised_email(form.get('email'))
            assert not refused_character_in(account.email), account.email
            assert account.handle == form.get('handle', '').strip().lower()


def shows_a_message(response):
    """A refusal a person can act on: an alert or a field marked invalid, or (htmx) where
    to go instead."""
    if 'HX-Redirect' in response.headers or response.status_code == 413:
        return True
    page = html(response)
    return bool(page.find(attrs={'role': 'alert'}) or page.find(attrs={'aria-invalid': 'true'}))


@pytest.mark.parametrize('endpoint', FORM_ENDPOINTS)
def test_a_form_refuses_hostile_fields_with_a_message_and_saves_nothing_half_way(app, endpoint):
    rule = form_rules(app)[endpoint]
    browser = Browser(app, anonymous=endpoint in ANONYMOUS)
    if browser.anonymous:
        make_user()  # alice, to log in as
    # Throttling has its own tests; here it would stop the fuzz before the form's logic.
    app.config.update(LOGIN_FAILURES_PER_ACCOUNT='10000 per minute',
                      LOGIN_FAILURES_PER_IP='10000 per minute', SIGNUPS_PER_IP='10000 per minute')
    app.config['AVATAR_UPLOADS_PER_USER'] = '10000 per minute'  # a pending upload per example

    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(form=form_of(endpoint), htmx=st.booleans(), avatar=AVATAR,
           ids=st.fixed_dictionaries({arg: ID for arg in rule.arguments}))
    def answers_without_a_server_error(form, htmx, avatar, ids):
        browser.ready()
        form = [(name, browser.own(value)) for name, value in form]
        real = browser.real_ids()
        values = {arg: real.get(arg, 'x') if choice == 'real' or arg == 'handle' else choice
                  for arg, choice in ids.items()}
        url = rule.build(values, append_unknown=False)[1]
        body = urllib.parse.urlencode(form + [('csrf_token', browser.csrf)])
        if endpoint == 'profile.upload_avatar':  # a file, among the fields as read
            body = MultiDict([*as_read(body).items(multi=True),
                              ('avatar', (io.BytesIO(avatar), 'avatar.png'))])
        user_id = browser.user.id if browser.user else None
        before, rows_before = state(), snapshot()
        response = browser.client.post(
            url, data=body,
            headers={**(HTMX if htmx else {}), 'HX-Current-URL': 'http://localhost/'},
            **({} if isinstance(body, MultiDict) else
               {'content_type': 'application/x-www-form-urlencoded'}))
        assert response.status_code < 500, (url, form)
        if response.status_code >= 400:
            assert shows_a_message(response), (url, form, response.status_code)
            assert snapshot() == rows_before, (url, form, response.status_code)
        if not isinstance(body, MultiDict):
            check_nothing_half_saved(endpoint, as_read(body), response, user_id, before, state())

    answers_without_a_server_error()
