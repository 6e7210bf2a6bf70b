"""Throttles on password guessing: every attempt is counted before its password is checked, and
a browser that has logged in to an account before (a device cookie, as OWASP's "Slow Down
Online Guessing Attacks with Device Cookies" describes) keeps an allowance of its own."""
import functools
import logging
import math
import secrets
import time

from flask import after_this_request, current_app, request
from flask_limiter.util import get_remote_address
from flask_login import current_user
from itsdangerous import BadData, URLSafeTimedSerializer
from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter
from werkzeug.exceptions import TooManyRequests

from models import User
from views import limiter

DEVICE_COOKIE_LIFETIME = 365 * 24 * 3600  # seconds; each login issues a new one
STORE_RETRY = 1  # seconds between asking a shared store that did not answer whether it is back
log = logging.getLogger(__name__)
FAILURES, SUCCESSES = 'failures', 'successes'


def counted(counters):
    """Decorate a view that checks a password: on POST each of `counters()`, a list of
    (config name of the limit, key, FAILURES or SUCCESSES), counts the attempt before the view
    runs, and a used-up one answers 429 instead. A redirect means the password was right: the
    attempt is given back to the counters of failures, any other answer to those of successes."""
    def decorate(view):
        @functools.wraps(view)
        def guarded(*args, **kwargs):
            if request.method != 'POST':
                return view(*args, **kwargs)
            taken = _take(counters())
            # A view that raises keeps the attempt counted: its password may have been checked.
            response = current_app.make_response(view(*args, **kwargs))
            outcome = SUCCESSES if response.status_code in (302, 303) else FAILURES
            _give_back([hit for hit in taken if hit[3] != outcome])
            return response
        return guarded
    return decorate


def login_counters():
    """A login is counted per device cookie when this browser has logged in to the account
    before; otherwise per account (however it was spelled) and per IP address, so guessing
    from elsewhere never blocks the owner's browser."""
    login = request.form.get('email', '').strip().lower()
    user = User.named(login)
    if user:
        return account_counters(user)
    return [('LOGIN_FAILURES_PER_ACCOUNT', 'account:' + login, FAILURES),
            ('LOGIN_FAILURES_PER_IP', 'ip:' + get_remote_address(), FAILURES)]


def reauth_counters():
    """Re-authentication is counted per session: only someone holding this logged-in session
    can use up its allowance, never a stranger failing to log in."""
    return [('LOGIN_FAILURES_PER_DEVICE', 'session:' + current_user.session.id, FAILURES)]


def signup_counters():
    """Sign-ups are counted per IP address: refusals (which tell whether an email has an
    account) slowly, accounts created generously."""
    return [('SIGNUP_FAILURES_PER_IP', 'signup-failures:' + get_remote_address(), FAILURES),
            ('SIGNUPS_PER_IP', 'signups:' + get_remote_address(), SUCCESSES)]


def account_counters(user):
    """The counters a password typed for `user` from this client goes to, as a login's does:
    the same allowance, whether it is guessed at /login or where the API asks for it."""
    device = _device_id(user.id)
    if device:
        return [('LOGIN_FAILURES_PER_DEVICE', 'device:' + device, FAILURES)]
    return [('LOGIN_FAILURES_PER_ACCOUNT', 'account:' + user.id, FAILURES),
            ('LOGIN_FAILURES_PER_IP', 'ip:' + get_remote_address(), FAILURES)]


def handle_lookup_counters(user):
    """Finding a handle taken (its preview or change on Advanced, the API's PATCH) tells that an
    account has it: counted per user, and per IP address together with sign-up's refusals,
    which tell the same. A free handle tells nothing about anyone and is not counted."""
    return [('HANDLE_LOOKUPS_PER_USER', 'handle-lookups:' + user.id, FAILURES),
            ('SIGNUP_FAILURES_PER_IP', 'signup-failures:' + get_remote_address(), FAILURES)]


def attempt(counters, check, failed=lambda answer: not answer):
    """What `check()` answers, counted as `counted` counts a login: the attempt is taken from
    `counters()` before the check runs (TooManyRequests when one is used up, and then nothing
    is checked), and given back to the counters of failures unless `failed(answer)`."""
    taken = _take(counters())
    answer = check()
    outcome = FAILURES if failed(answer) else SUCCESSES
    _give_back([hit for hit in taken if hit[3] != outcome])
    return answer


def count_action(config_name, key, message):
    """Count one go at an action limited per user (the limit is config `config_name`, such as
    "5 per hour"; `key` names whose count it is), atomically in the shared store, once the
    request is known to be valid and before the action runs; past the limit, a 429 that says
    `message` (with Retry-After), and the go is not counted."""
    try:
        _take([(config_name, key, SUCCESSES)])
    except TooManyRequests as error:
        error.description = message
        raise


def trust_this_browser(user):
    """Give this request's answer a new device cookie for `user`, who has just logged in."""
    value = _serializer().dumps({'account': user.id, 'device': secrets.token_urlsafe(16)})

    @after_this_request
    def set_cookie(response):
        response.set_cookie(_cookie_name(), value, max_age=DEVICE_COOKIE_LIFETIME, path='/',
                            secure=current_app.config['SESSION_COOKIE_SECURE'], httponly=True,
                            samesite='Lax')
        return response


def _device_id(account_id):
    """The device id of this browser's device cookie when it is valid and for `account_id`."""
    try:
        data = _serializer().loads(request.cookies.get(_cookie_name(), ''),
                                   max_age=DEVICE_COOKIE_LIFETIME)
    except BadData:
        return None
    if isinstance(data, dict) and data.get('account') == account_id:
        return data.get('device')
    return None


def _serializer():
    return URLSafeTimedSerializer(current_app.secret_key, salt='penstock-device-cookie')


def _cookie_name():
    # __Host- over https (COOKIE_PREFIX, as the session cookie): no sibling host can plant one.
    return current_app.config['COOKIE_PREFIX'] + 'penstock_device'


def _take(counters):
    """Count one attempt on every counter, atomically in the shared store (a hit is an
    increment that answers whether the new count is within the limit), or give them all back
    and answer 429."""
    taken = []
    for config_name, key, counts in counters:
        limit = parse(current_app.config[config_name])
        strategy, allowed = _hit(limit, key)
        taken.append((strategy, limit, key, counts))
        if not allowed:
            reset = strategy.get_window_stats(limit, key).reset_time
            _give_back(taken)
            raise TooManyRequests(retry_after=max(1, math.ceil(reset - time.time())))
    return taken


def _hit(limit, key):
    """(the strategy that counted, whether within the limit). The count goes to the shared
    store (limiter.storage, RATELIMIT_STORAGE_URI); while that store does not answer, to this
    process's memory, as Flask-Limiter's own decorators do: each process counts alone, and the
    store is asked again (its public check()) at most every STORE_RETRY seconds, its counts
    used again as soon as it answers."""
    state = current_app.extensions.setdefault('throttle', {'fallback': None, 'retry_at': None})
    if state['retry_at'] is not None:
        if time.monotonic() < state['retry_at']:
            return state['fallback'], state['fallback'].hit(limit, key)
        if not limiter.storage.check():
            state['retry_at'] = time.monotonic() + STORE_RETRY
            return state['fallback'], state['fallback'].hit(limit, key)
        state['retry_at'] = None
        log.warning('The rate-limit store answers again: counting there again.')
    strategy = FixedWindowRateLimiter(limiter.storage)
    try:
        return strategy, strategy.hit(limit, key)
    except limiter.storage.base_exceptions:
        if not current_app.config['RATELIMIT_IN_MEMORY_FALLBACK_ENABLED']:
            raise
        log.warning("The rate-limit store does not answer: counting in this process's memory "
                    'until it does.')
        if state['fallback'] is None:
            state['fallback'] = FixedWindowRateLimiter(MemoryStorage())
        state['retry_at'] = time.monotonic() + STORE_RETRY
        return state['fallback'], state['fallback'].hit(limit, key)


def _give_back(taken):
    """Undo hits: with a fixed window a hit of -1 takes one off the count.
    A store that has gone away since has nothing to give back to."""
    for strategy, limit, key, _counts in taken:
        try:
            strategy.hit(limit, key, cost=-1)
        except limiter.storage.base_exceptions:
            pass
