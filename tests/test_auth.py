"""Signing up, logging in, logging out and throttling."""
import datetime
import re
from urllib.parse import parse_qs, urlsplit

import pytest
from flask_login import current_user, login_fresh
from peewee import OperationalError

import credentials
import database
import models
from tests.conftest import SESSION_COOKIE
from tests.helpers import PASSWORD, csrf_token, html, log_in, make_user


def sign_up(client, email='carol@example.com', handle='carol', password=PASSWORD):
    token = csrf_token(client, '/signup')
    return client.post('/signup', data={'email': email, 'handle': handle, 'password': password,
                                        'csrf_token': token})


def field_error(response, name):
    element = html(response).find(id=f'{name}-error')
    return element.get_text(strip=True) if element else None


def test_signup_form_has_the_spec_fields(client):
    page = html(client.get('/signup'))
    for name, label in [('email', 'Email'), ('handle', 'Handle'), ('password', 'Password')]:
        assert page.find('label', attrs={'for': name}).get_text(strip=True) == label
        assert page.find('input', id=name)
    assert page.find('button', string='Sign up')


# Carrying the way back (`next`) through sign-up (SPEC §12, §13)

def link_next(page, name):
    """The `next` the page's link named `name` carries, and the path it leads to."""
    href = page.find('a', string=name)['href']
    return urlsplit(href).path, parse_qs(urlsplit(href).query).get('next')


def reason(page):
    """The sentence that says why the visitor is asked to log in or sign up, or None."""
    card = page.find(class_='auth')
    found = card.find('p', string=re.compile('^(Log in|Sign up) to '))
    return found.get_text() if found else None


def test_login_and_signup_without_next_link_to_each_other_bare_and_give_no_reason(client):
    login = html(client.get('/login'))
    assert link_next(login, 'Sign up') == ('/signup', None) and reason(login) is None
    signup = html(client.get('/signup'))
    assert link_next(signup, 'Log in') == ('/login', None) and reason(signup) is None
    assert signup.find('input', attrs={'name': 'next'})['value'] == '/'


@pytest.mark.parametrize('target, why', [
    ('/login/token?r=l_abc', 'to verify the CLI login request'),
    ('/user/alice/settings/tokens', 'to continue to Settings → Tokens'),
    ('/user/alice/settings/audit', 'to continue to Settings → Audit Log'),
    ('/user/alice/settings/advanced#sessions', 'to continue to Settings → Advanced'),
    ('/no/such/page', None),
    ('/logout', None),  # not a page one is sent to log in for
])
def test_login_and_signup_carry_next_to_each_other_and_say_why(client, target, why):
    login = html(client.get('/login', query_string={'next': target}))
    assert link_next(login, 'Sign up') == ('/signup', [target])
    assert reason(login) == (f'Log in {why}.' if why else None)
    signup = html(client.get('/signup', query_string={'next': target}))
    assert signup.find('form', action='/signup').find(
        'input', attrs={'name': 'next'})['value'] == target
    assert link_next(signup, 'Log in') == ('/login', [target])
    assert reason(signup) == (f'Sign up {why}.' if why else None)


@pytest.mark.parametrize('target', ['//evil.example', '/\\evil.example', 'https://evil.example',
                                    '/\t/evil.example', 'javascript:alert(1)'])
def test_a_hostile_next_is_not_carried_to_signup_and_signing_up_goes_home(client, app, target):
    login = html(client.get('/login', query_string={'next': target}))
    assert link_next(login, 'Sign up') == ('/signup', None) and reason(login) is None
    signup = html(client.get('/signup', query_string={'next': target}))
    assert signup.find('input', attrs={'name': 'next'})['value'] == '/'
    token = csrf_token(client, '/signup')
    response = client.post('/signup', data={'email': 'carol@example.com', 'handle': 'carol',
                                            'password': PASSWORD, 'csrf_token': token,
                                            'next': target})
    assert response.status_code == 302 and response.headers['Location'] == '/'


def test_signing_up_with_next_goes_there_and_a_refused_form_keeps_it(client, app):
    target = '/user/carol/settings/tokens?x=1'
    token = csrf_token(client, '/signup')
    form = {'email': 'not-an-email', 'handle': 'carol', 'password': PASSWORD,
            'csrf_token': token, 'next': target}
    refused = client.post('/signup', data=form)
    assert refused.status_code == 422
    page = html(refused)
    assert page.find('input', attrs={'name': 'next'})['value'] == target
    assert link_next(page, 'Log in') == ('/login', [target])
    assert reason(page) == 'Sign up to continue to Settings → Tokens.'
    response = client.post('/signup', data={**form, 'email': 'carol@example.com'})
    assert response.status_code == 302 and response.headers['Location'] == target
    assert client.get(target).status_code == 200
    # Signed in already, the sign-up page leads to `next` too.
    again = client.get('/signup', query_string={'next': '/user/carol/settings/profile'})
    assert again.status_code == 302
    assert again.headers['Location'] == '/user/carol/settings/profile'


def test_signup_creates_the_account_and_logs_in(client, app):
    response = sign_up(client, email='Carol@Example.com', handle='Carol')
    assert response.status_code == 302
    assert response.headers['Location'] == '/'
    with database.db.connection_context():
        user = models.User.get(models.User.handle == 'carol')
        assert user.email == 'carol@example.com'
        assert user.id.startswith('u_') and len(user.id) == 22
        assert credentials.Session.select().where(credentials.Session.user == user).count() == 1
        records = (models.AuditRecord.select().where(models.AuditRecord.identity == user)
                   .order_by(models.AuditRecord.created_at))
        actions = [r.action_type for r in records]
        assert actions == ['user.signup', 'user.login']
        assert models.Preferences.for_user(user).product_updates is True
    home = client.get('/')
    assert home.status_code == 200
    assert html(home).find(id='flash').get_text(strip=True) == 'Welcome to Penstock, carol.'


@pytest.mark.parametrize('handle', ['', '-carol', 'carol-', 'ca--rol', 'ca_rol', 'a' * 40, 'café'])
def test_signup_refuses_a_bad_handle_with_the_rules(client, app, handle):
    response = sign_up(client, handle=handle)
    assert response.status_code == 422
    assert 'lowercase letters, digits or single hyphens' in field_error(response, 'handle')
    with database.db.connection_context():
        assert models.User.select().count() == 0


@pytest.mark.parametrize('handle', ['a', 'a-b-c', 'x' * 39, '0day'])
def test_signup_accepts_good_handles(client, app, handle):
    assert sign_up(client, handle=handle).status_code == 302


def test_email_and_handle_are_unique_whatever_their_case(client, user):
    response = sign_up(client, email='ALICE@example.com', handle='ALICE')
    assert response.status_code == 422
    assert 'already exists' in field_error(response, 'email')
    assert 'taken' in field_error(response, 'handle')
    with database.db.connection_context():
        assert models.User.select().count() == 1


def test_signup_refuses_a_bad_email_and_short_password_keeping_what_was_typed(client, app):
    response = sign_up(client, email='not-an-email', handle='carol', password='short')
    assert response.status_code == 422
    assert field_error(response, 'email')
    assert field_error(response, 'password') == 'Use 8 to 128 characters.'
    page = html(response)
    assert page.find('input', id='handle')['value'] == 'carol'
    assert page.find('input', id='handle').get('aria-invalid') is None
    assert page.find('input', id='email')['aria-invalid'] == 'true'
    assert 'value' not in page.find('input', id='password').attrs


@pytest.mark.parametrize('login', ['alice', 'alice@example.com', ' ALICE@Example.com '])
def test_login_accepts_email_or_handle(client, user, login):
    response = log_in(client, login)
    assert response.status_code == 302
    assert response.headers['Location'] == '/'


def test_login_form_has_the_spec_fields(client):
    page = html(client.get('/login'))
    field = page.find('input', id='email')
    assert page.find('label', attrs={'for': 'email'}).get_text(strip=True) == 'Email'
    assert field['type'] == 'text' and field['autocomplete'] == 'username'
    assert page.find('label', attrs={'for': 'password'}).get_text(strip=True) == 'Password'
    assert page.find('button', string='Log in')


def test_wrong_password_and_unknown_account_get_the_same_error(client, user):
    wrong = log_in(client, 'alice', 'wrong password')
    unknown = log_in(client, 'nobody@example.com', 'wrong password')
    assert wrong.status_code == unknown.status_code == 401
    message = html(wrong).find(class_='form-error').get_text(strip=True)
    assert message == html(unknown).find(class_='form-error').get_text(strip=True)
    assert 'do not match' in message
    assert client.get('/').status_code == 302
    with database.db.connection_context():
        assert credentials.Session.select().count() == 0


@pytest.mark.parametrize('login', ['ali\x00ce', 'alice\x00@example.com', 'alice\u202e',
                                   'a' * 300 + '@example.com'])
def test_a_login_no_account_can_have_is_a_wrong_login_not_an_error(client, user, login):
    """PostgreSQL refuses to compare with a NUL: such a login is refused before any query."""
    response = log_in(client, login)
    assert response.status_code == 401
    assert 'do not match' in html(response).find(class_='form-error').get_text(strip=True)


@pytest.mark.parametrize('field, value, message', [
    ('email', 'carol\x00@example.com', 'Remove line breaks and other control characters '
                                       '(U+0000).'),
    ('email', 'carol\u200b@example.com', 'Remove invisible formatting characters (U+200B).'),
    ('handle', 'car\x7fol', 'Remove line breaks and other control characters (U+007F).'),
    ('password', PASSWORD + '\x1b', 'Remove line breaks and other control characters '
                                    '(U+001B).'),
])
def test_signup_refuses_control_and_invisible_characters_at_the_field(client, app, field, value,
                                                                      message):
    response = sign_up(client, **{field: value})
    assert response.status_code == 422
    assert field_error(response, field) == message
    with database.db.connection_context():
        assert models.User.select().count() == 0


def test_login_follows_a_local_next_but_never_another_host(client, user):
    token = csrf_token(client, '/login')
    response = client.post('/login', data={'email': 'alice', 'password': PASSWORD,
                                           'csrf_token': token,
                                           'next': '/user/alice/settings/notifications'})
    assert response.headers['Location'] == '/user/alice/settings/notifications'
    client.post('/logout', data={'csrf_token': csrf_token(client, '/user/alice/settings/profile')})
    for target in ['//evil.example/', 'https://evil.example/', '/\\evil.example']:
        token = csrf_token(client, '/login')
        response = client.post('/login', data={'email': 'alice', 'password': PASSWORD,
                                               'csrf_token': token, 'next': target})
        assert response.headers['Location'] == '/'
        client.post('/logout',
                    data={'csrf_token': csrf_token(client, '/user/alice/settings/profile')})


@pytest.mark.parametrize('target', ['/\t/evil.example', '/\n/evil.example', '\t//evil.example',
                                    ' /\\evil.example', '/\r\n/evil.example'])
def test_a_next_with_a_tab_or_newline_does_not_lead_to_another_host(app, client, user,
                                                                    target):
    """A browser drops tabs and newlines (and leading spaces), so these all read as
    //evil.example: each leads home, after a login that made its session."""
    response = client.post('/login', data={'email': 'alice', 'password': PASSWORD,
                                           'csrf_token': csrf_token(client, '/login'),
                                           'next': target})
    assert response.status_code == 302 and response.headers['Location'] == '/'
    with database.db.connection_context():
        assert credentials.Session.select().count() == 1
    response = client.get('/login', query_string={'next': target})
    assert response.status_code == 302 and response.headers['Location'] == '/'
    form = html(app.test_client().get('/login', query_string={'next': target}))
    assert form.find('input', attrs={'name': 'next'})['value'] == '/'


def test_a_page_that_needs_login_sends_there_and_back(client, user):
    response = client.get('/user/alice/settings/notifications')
    assert response.status_code == 302
    assert response.headers['Location'] == '/login?next=/user/alice/settings/notifications'


def test_logout_ends_the_session_everywhere(client, app, logged_in):
    cookie = client.get_cookie(SESSION_COOKIE).value
    token = csrf_token(client, '/user/alice/settings/profile')
    response = client.post('/logout', data={'csrf_token': token})
    assert response.status_code == 302 and response.headers['Location'] == '/login'
    with database.db.connection_context():
        assert credentials.Session.select().count() == 0
        assert models.AuditRecord.select().where(
            models.AuditRecord.action_type == 'user.logout').count() == 1
    replay = app.test_client()
    replay.set_cookie(SESSION_COOKIE, cookie)
    assert replay.get('/user/alice/settings/profile').status_code == 302


def test_a_login_holds_when_the_browser_changes_address_and_user_agent(client, logged_in):
    """A login is its Session row (views.login_manager turns Flask-Login's session protection
    off): a phone that leaves its wifi, or a browser that updates itself, stays logged in. This
    pins Flask-Login's public session_protection: its 'strong' mode would log this browser out,
    and `login_fresh()` (which nothing here asks for) would turn false with 'basic'."""
    client.environ_base.update(HTTP_USER_AGENT='Mozilla/5.0 Firefox/140.0',
                               REMOTE_ADDR='203.0.113.7')
    with client:
        response = client.get('/user/alice/settings/profile')
        assert response.status_code == 200 and login_fresh()
        assert current_user.is_authenticated and current_user.id == logged_in.id


def test_a_revoked_session_row_refuses_its_cookie(client, logged_in):
    assert client.get('/user/alice/settings/profile').status_code == 200
    with database.db.connection_context():
        credentials.Session.delete().execute()
    response = client.get('/user/alice/settings/profile')
    assert response.status_code == 302
    assert response.headers['Location'].startswith('/login')


def test_a_session_idle_past_its_lifetime_is_refused(client, app, logged_in):
    with database.db.connection_context():
        credentials.Session.update(last_seen_at=models.utcnow() - app.config[
            'PERMANENT_SESSION_LIFETIME'] - credentials.SESSION_TOUCH_EVERY).execute()
    assert client.get('/user/alice/settings/profile').status_code == 302
    with database.db.connection_context():
        assert credentials.Session.select().count() == 0


def test_a_session_older_than_its_absolute_lifetime_is_refused_however_busy(client, app,
                                                                            logged_in):
    lifetime = app.config['SESSION_ABSOLUTE_LIFETIME']
    assert lifetime == datetime.timedelta(days=30)
    with database.db.connection_context():
        credentials.Session.update(created_at=models.utcnow() - lifetime
                                   + datetime.timedelta(hours=1),
                                   last_seen_at=models.utcnow()).execute()
    assert client.get('/user/alice/settings/profile').status_code == 200
    with database.db.connection_context():
        credentials.Session.update(created_at=models.utcnow() - datetime.timedelta(days=31),
                                   last_seen_at=models.utcnow()).execute()
    response = client.get('/user/alice/settings/profile')
    assert response.status_code == 302 and response.headers['Location'].startswith('/login')
    with database.db.connection_context():
        assert credentials.Session.select().count() == 0


# An in-app browser's User-Agent of 333 characters, like the one in the report.
IN_APP_BROWSER = (
    'Mozilla/5.0 (iPhone; CPU iPhone OS 17_5_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like '
    'Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/470.0.0.36.98;FBBV/621094612;FBDV/iPhone15,3;FBMD/'
    'iPhone;FBSN/iOS;FBSV/17.5.1;FBSS/3;FBID/phone;FBLC/en_US;FBOP/5;FBRV/623405785;IABMV/1] '
    'Instagram 335.0.2.18.100 (iPhone15,3; iOS 17_5; en_US; en; scale=3')


@pytest.mark.parametrize('length', [333, 2000])
def test_a_long_user_agent_signs_up_and_logs_in_and_is_kept_shortened(app, length):
    user_agent = (IN_APP_BROWSER * 7)[:length]
    first, second = app.test_client(), app.test_client()
    for browser in (first, second):
        browser.environ_base['HTTP_USER_AGENT'] = user_agent
    assert sign_up(first).status_code == 302
    assert log_in(second, 'carol').status_code == 302
    for browser in (first, second):
        assert browser.get('/user/carol/settings/advanced').status_code == 200
    with database.db.connection_context():
        kept = [s.user_agent for s in credentials.Session.select()]
    assert kept == [user_agent[:512]] * 2


def test_a_user_agent_with_a_control_character_is_refused_and_makes_no_account(client, app):
    token = csrf_token(client, '/signup')
    client.environ_base['HTTP_USER_AGENT'] = 'Agent\x00/1.0\x1b[31m (X11; Linux)'
    response = client.post('/signup', data={'email': 'alice@example.com', 'handle': 'alice',
                                            'password': PASSWORD, 'csrf_token': token})
    assert response.status_code == 400
    assert 'control character (U+0000)' in html(response).get_text()
    with database.db.connection_context():
        assert not models.User.select().exists()


def test_a_tab_in_the_user_agent_is_left_out_of_the_session(client, app):
    client.environ_base['HTTP_USER_AGENT'] = 'Agent/1.0 (X11;\tLinux)'
    assert sign_up(client).status_code == 302
    with database.db.connection_context():
        assert credentials.Session.get().user_agent == 'Agent/1.0 (X11;Linux)'


def test_signup_leaves_no_account_when_its_session_cannot_be_stored(client, app, monkeypatch):
    def refuse(cls, **values):
        raise OperationalError('database is locked')

    with monkeypatch.context() as patched:
        patched.setattr(credentials.Session, 'create', classmethod(refuse))
        response = sign_up(client)
    assert response.status_code == 503
    assert html(response).find('h1').get_text(strip=True) == 'Penstock is busy'
    with database.db.connection_context():
        for model in (models.User, models.Preferences, models.Avatar, credentials.Session,
                      models.AuditRecord):
            assert model.select().count() == 0, model.__name__
    assert sign_up(client).status_code == 302  # nothing half-made stands in the way


def test_session_last_seen_and_the_cookie_are_renewed_at_most_once_a_minute(client, logged_in):
    with database.db.connection_context():
        first = credentials.Session.get().last_seen_at
    client.get('/user/alice/settings/profile')  # the first form stores the CSRF token
    response = client.get('/user/alice/settings/profile')
    assert 'Set-Cookie' not in response.headers  # not re-sent with every answer
    with database.db.connection_context():
        assert credentials.Session.get().last_seen_at == first
        credentials.Session.update(
            last_seen_at=first - credentials.SESSION_TOUCH_EVERY * 2).execute()
    response = client.get('/user/alice/settings/profile')
    with database.db.connection_context():
        assert credentials.Session.get().last_seen_at > first
    # The cookie's expiry moves on with the row's: 14 days from now, as at login.
    cookie = response.headers['Set-Cookie']
    assert cookie.startswith(SESSION_COOKIE + '=') and 'Expires=' in cookie
    assert client.get_cookie(SESSION_COOKIE).expires > (
        datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=13))


def test_failed_logins_are_throttled_per_account_even_with_the_right_password(client, user):
    for _ in range(10):
        assert log_in(client, 'alice', 'wrong password').status_code == 401
    response = log_in(client, 'alice@example.com', PASSWORD)
    assert response.status_code == 429
    assert 'Too many attempts' in html(response).find(class_='form-error').get_text()
    assert 'Retry-After' in response.headers
    make_user('bob@example.com', 'bob')
    assert log_in(client, 'bob').status_code == 302


def test_failures_from_one_ip_hit_a_slower_ceiling(app, client):
    app.config['LOGIN_FAILURES_PER_IP'] = '5 per 10 minutes'
    for n in range(5):
        assert log_in(client, f'nobody{n}', 'wrong password').status_code == 401
    assert log_in(client, 'someone-else', 'wrong password').status_code == 429


@pytest.mark.slow  # 60 logins, each checking a password hash
def test_successful_logins_from_one_ip_are_not_limited_below_60_a_minute(app, user):
    for _ in range(61):
        client = app.test_client()
        assert log_in(client, 'alice').status_code == 302
