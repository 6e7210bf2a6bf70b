"""What the browser tests share: a Person who signs up and logs in, ways to find things on
the page as a person would, waits for htmx, and plain HTTP calls from outside the browser."""
import datetime
import itertools
import json
import re
import urllib.error
import urllib.request
import uuid

from playwright.sync_api import expect

import addresses
import credentials
import database
import models
from tests.helpers import PASSWORD

GENERIC_LOGIN_ERROR = ('That email or handle and password do not match. '
                       'Check them and try again.')

_people = itertools.count(1)


class Person:
    """Someone who signs up, logs in and finds their way by what the page shows them."""

    def __init__(self):
        self.handle = f'p{next(_people)}-{uuid.uuid4().hex[:8]}'
        self.email = f'{self.handle}@example.com'
        self.password = PASSWORD
        self.profile_path = f'/user/{self.handle}/settings/profile'
        self.notifications_path = f'/user/{self.handle}/settings/notifications'

    def sign_up(self, page, verify=True):
        """Sign up at /signup, be welcomed on the console home, then open Settings → Profile;
        with `verify`, as someone who has opened the link in the verification email (the
        address counts as verified; the link itself has its own tests)."""
        page.goto('/signup')
        page.get_by_label('Email', exact=True).fill(self.email)
        page.get_by_label('Handle', exact=True).fill(self.handle)
        page.get_by_label('Password', exact=True).fill(self.password)
        page.get_by_role('button', name='Sign up').click()
        expect(page).to_have_url(url_ending('/'))
        expect(page.get_by_role('status')).to_have_text(f'Welcome to Penstock, {self.handle}.')
        if verify:
            with database.db.connection_context():
                addresses.mark_verified(models.User.get(models.User.handle == self.handle))
        page.goto(self.profile_path)
        page.wait_for_load_state()

    def log_in(self, page, login=None, password=None):
        """Submit the login form; by default with the handle, which the Email field accepts."""
        page.goto('/login')
        page.get_by_label('Email', exact=True).fill(login or self.handle)
        page.get_by_label('Password', exact=True).fill(password or self.password)
        page.get_by_role('button', name='Log in').click()


def url_ending(path):
    """A URL pattern for expect(page).to_have_url: this path, with no query or fragment."""
    return re.compile(re.escape(path) + '$')


def settings_link(page, name):
    return page.get_by_role('navigation', name='Settings').get_by_role('link', name=name)


def panel_heading(page, name):
    return page.get_by_role('heading', level=2, name=name)


def settled(page):
    """Wait until htmx has wired up what it swapped in.

    htmx shows new content at once but only processes it (hx-* attributes, triggers) when it
    settles, about 20 ms later; a test is faster than a person, so it waits for that.
    """
    expect(page.locator('.htmx-added, .htmx-settling, .htmx-request')).to_have_count(0)


def mark_document(page):
    """Tag the current document, so a later check can tell a swap from a page load."""
    page.evaluate('window.penstockSameDocument = true')


def is_same_document(page):
    return page.evaluate('window.penstockSameDocument === true')


def age_the_login(person):
    """Make the person's sessions look as if the password was typed long ago (two hours)."""
    long_ago = models.utcnow() - datetime.timedelta(hours=2)
    with database.db.connection_context():
        user = models.User.get(models.User.handle == person.handle)
        credentials.Session.update(authenticated_at=long_ago, created_at=long_ago).where(
            credentials.Session.user == user).execute()


def confirm_password(page, person):
    """Answer the Confirm your password page that a dangerous action led to."""
    expect(page.get_by_role('heading', level=1, name='Confirm your password')).to_be_visible()
    page.get_by_label('Password', exact=True).fill(person.password)
    page.get_by_role('button', name='Continue').click()


def call(url, method='GET', token=None):
    """One HTTP request from outside any browser; returns (status, JSON body)."""
    request = urllib.request.Request(url, method=method)
    if token:
        request.add_header('Authorization', f'Bearer {token}')
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b'{}')
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read() or b'{}')
