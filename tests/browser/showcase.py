"""A realistic account for the layout tests and `make screenshots`: a person with a long
display name, a ready workspace, two tokens, audit records of every kind and three sessions,
and the list of every page a person sees, to visit logged in."""
from typing import NamedTuple

from playwright.sync_api import expect

import announcements
import credentials
import database
import models
import workspaces
from tests.browser.helpers import Person, url_ending

LONG_NAME = 'Anastasia Konstantinopoulou-Vandenberghe'
# Browsers a person logs in from: the Sessions table names each by its user agent.
PHONE_AGENT = ('Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 '
               '(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1')
LAPTOP_AGENT = ('Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0')
PHONE = {'viewport': {'width': 390, 'height': 844}, 'is_mobile': True, 'has_touch': True,
         'device_scale_factor': 2}
DESKTOP = {'viewport': {'width': 1280, 'height': 800}}


class Page(NamedTuple):
    name: str
    path: str
    logged_in: bool = True


class Showcase(NamedTuple):
    person: Person
    storage_state: dict  # the cookies of a logged-in browser
    pages: list


def account(person):
    with database.db.connection_context():
        return models.User.get(models.User.handle == person.handle)


def log_in_from(browser, base_url, person, **context_options):
    """Log `person` in from a new browser context; returns the context (logged in)."""
    context = browser.new_context(base_url=base_url, **context_options)
    context.set_default_timeout(10_000)
    page = context.new_page()
    person.log_in(page)
    expect(page).to_have_url(url_ending('/'))
    page.close()
    return context


def _fill_the_account(user, worker):
    """Everything a long-used account has, made through the models as the views make it, each
    from an address of its own (IPv6 ones are the longest a log shows)."""
    home, office, cafe = '2001:db8:85a3:8d3:1319:8a2e:370:7348', '198.51.100.23', '203.0.113.77'
    user.set_display_name(LONG_NAME, ip=home)
    workspaces.Workspace.provision(user, 'analytics', ip=home)
    workspaces.Workspace.provision(user, 'scratch', ip=office).remove(ip=office)
    models.Preferences.change(user, {'community_updates': True, 'tips_and_tricks': True}, ip=home)
    models.Preferences.change(user, {'tips_and_tricks': False}, via='email')
    first, _ = credentials.Token.issue(user, ip=office)
    credentials.Token.issue(user, ip=cafe)[0].remove(ip=cafe)
    credentials.Token.issue(user, ip=home)
    first.set_status('inactive', ip=office)
    workspaces.DatabasePassword.rotate(user, ip=home)
    for answer in ('confirm', 'decline'):
        request = credentials.LoginRequest.start(ip=cafe)
        credentials.LoginRequest.claim(request.id, user)
        getattr(request, answer)(user, ip=home)
    models.User.authenticate(user.handle, 'not the password', ip=cafe)
    models.AuditRecord.write('user.avatar.update', user, home, target=user)
    models.AuditRecord.write('user.avatar.delete', user, home, target=user)
    models.AuditRecord.write('email.failed', user, None, target=user,
                             data={'kind': 'token.create', 'code': 550})
    worker.finish()  # the workspace is made on the workspace server: ready, not pending


def make_showcase(browser, base_url, worker):
    """Sign a person up and fill their account; the returned storage state logs a browser in
    as them. Three sessions: this one, a phone's and a laptop's (the laptop's revoked and
    logged in again, so the log has a revoked session too)."""
    person = Person()
    context = browser.new_context(base_url=base_url)
    context.set_default_timeout(10_000)
    page = context.new_page()
    person.sign_up(page)
    state = context.storage_state()
    others = [log_in_from(browser, base_url, person, user_agent=agent)
              for agent in (PHONE_AGENT, LAPTOP_AGENT, LAPTOP_AGENT)]
    user = account(person)
    with database.db.connection_context():
        laptop = next(s for s in credentials.Session.for_user(user) if s.user_agent == LAPTOP_AGENT)
        credentials.Session.revoke(user, laptop.id, ip='198.51.100.23')
        _fill_the_account(user, worker)
        request = credentials.LoginRequest.start(ip='203.0.113.77')
        unsubscribe = announcements.unsubscribe_token(user.id, 'community_updates')
    for other in others + [context]:
        other.close()
    settings = f'/user/{person.handle}/settings'
    pages = [
        Page('home', '/'),
        Page('profile', f'{settings}/profile'),
        Page('notifications', f'{settings}/notifications'),
        Page('tokens', f'{settings}/tokens'),
        Page('advanced', f'{settings}/advanced'),
        Page('audit-log', f'{settings}/audit'),
        Page('cli-login', f'/login/token?r={request.id}'),
        Page('unsubscribe', f'/unsubscribe/{unsubscribe}', logged_in=False),
        Page('login', '/login', logged_in=False),
        Page('signup', '/signup', logged_in=False),
    ]
    return Showcase(person, state, pages)
