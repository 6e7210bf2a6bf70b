"""HTTP benchmarks 1 and 2 of issue 6: Penstock under load against baselines, same run.

1. Fragment throughput: the Notifications panel fragment (GET, htmx) and the notification
   toggle (POST, htmx, CSRF token and session cookie) against bench/_bare_app.py doing one
   SELECT plus a small template, and one UPDATE, on the same database. Target ≥ 0.6 each.
2. API: GET /api/v0/actor with a bearer token against the same view without authentication
   (bench/_real_app.py's /bench/actor/<id>, same server). Target ≥ 0.8.

Both servers are gunicorn sync workers on 127.0.0.1 with the same settings; the load is
bench/_load.py (wrk is not available here), each run bounded in time and request count.
Prints the figures, the ratio in each round (the noise) and whether each target is met; exits 0
either way. Quick mode (BENCH_QUICK=1, see _common.py): one short round, targets not judged.
"""
import http.client
import os
import re
import sys
import tempfile
from urllib.parse import urlencode

import _serve  # noqa: F401  (puts the repository root on sys.path)
from _serve import compare, environment, gunicorn, verdict

FORM = 'application/x-www-form-urlencoded'


def prepare(env):
    """Create the schema, a user with a token; return (user id, handle, token secret)."""
    os.environ.update({key: env[key] for key in ('DATABASE_URL', 'SECRET_KEY',
                                                 'DATABASE_PASSWORD_KEYS')})
    import credentials
    import database
    import models
    from app import create_app
    create_app()
    database.migrate(database.db.obj)
    with database.db.connection_context():
        user = models.User.sign_up('bench@example.com', 'bench', 'bench password')
        _, secret = credentials.Token.issue(user)
    database.db.close()
    return user.id, user.handle, secret


def request(port, method, path, body=None, headers=None):
    connection = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        # The Cookie header a browser sends back: a login sets the session and device cookies.
        cookies = '; '.join(cookie.split(';', 1)[0]
                            for cookie in response.msg.get_all('Set-Cookie') or [])
        return response.status, cookies, response.read().decode()
    finally:
        connection.close()


def log_in(port, handle, panel):
    """Log in through the real form; return (Cookie header, the CSRF token of `panel`'s form).

    Logging in starts a fresh session, so the token is read from a page after it."""
    _, cookie, page = request(port, 'GET', '/login')
    status, set_cookie, _ = request(
        port, 'POST', '/login',
        urlencode({'email': handle, 'password': 'bench password',
                   'csrf_token': _csrf_field(page)}),
        {'Content-Type': FORM, 'Cookie': cookie})
    if status != 302:
        raise RuntimeError(f'logging in answered {status}')
    status, touched, page = request(port, 'GET', panel, headers={'Cookie': set_cookie})
    if status != 200:
        raise RuntimeError(f'{panel} answered {status}')
    return touched or set_cookie, _csrf_field(page)


def _csrf_field(page):
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def main():
    print('HTTP benchmarks (bench/server.py): gunicorn, '
          f'{_serve.WORKERS} sync workers each, {_serve.THREADS} client threads, '
          f'{os.cpu_count()} CPUs, load average ' + '{:.2f} {:.2f} {:.2f}'.format(
              *os.getloadavg()))
    print(f'Figures: {_serve.ROUNDS} alternating {_serve.SECONDS:g} s rounds after a '
          f'{_serve.WARMUP:g} s warm-up: the median rate of each server, the median round\'s '
          'ratio and every round\'s; one new connection per request.')
    with tempfile.TemporaryDirectory(prefix='penstock-bench-') as folder:
        env = environment(folder)
        user_id, handle, secret = prepare(env)
        with gunicorn('_real_app:create()', env, '/login') as ours, \
                gunicorn('_bare_app:create()', env, f'/preferences/{user_id}') as bare:
            panel = f'/user/{handle}/settings/notifications'
            cookie, csrf = log_in(ours, handle, panel)
            htmx = {'Cookie': cookie, 'HX-Request': 'true'}
            toggles = [urlencode({'csrf_token': csrf, 'product_updates': 'on', **extra})
                       for extra in ({'community_updates': 'on'}, {})]
            bare_toggles = [urlencode(extra) for extra in ({'community_updates': 'on'}, {})]
            form = {'Content-Type': FORM}
            results = {
                'get': compare((ours, [('GET', panel, None, htmx)], 200),
                               (bare, [('GET', f'/preferences/{user_id}', None, {})], 200)),
                'post': compare((ours, [('POST', panel, body, {**htmx, **form})
                                        for body in toggles], 200),
                                (bare, [('POST', f'/preferences/{user_id}', body, form)
                                        for body in bare_toggles], 200)),
                'api': compare((ours, [('GET', '/api/v0/actor', None,
                                        {'Authorization': f'Bearer {secret}'})], 200),
                               (ours, [('GET', f'/bench/actor/{user_id}', None, {})], 200)),
            }
    print()
    print('Statuses seen (all rounds):')
    for name, (_, _, statuses) in results.items():
        print(f'  {name:5} ours {statuses["ours"]}  baseline {statuses["baseline"]}')
    print()
    print('Ratios and targets (Penstock / baseline, same run):')
    verdict('1. Notifications fragment GET vs bare app', *results['get'][:2], 0.6)
    verdict('1. Notification toggle POST vs bare app', *results['post'][:2], 0.6)
    verdict('2. GET /api/v0/actor, bearer vs no auth', *results['api'][:2], 0.8)


if __name__ == '__main__':
    sys.exit(main())
