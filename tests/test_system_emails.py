"""System emails: every System event queues exactly one message to the account's address in
its own transaction, and the message says what happened, when, from which IP and device, and
what to do if it was not the user, with links that work and no secret in it."""
import datetime
from urllib.parse import urlsplit

import pytest
from bs4 import BeautifulSoup

import credentials
import database
import mail
import models
import workspaces
from tests.conftest import MADE_SECRETS
from tests.helpers import HTMX, csrf_token, html, log_in
from tests.helpers import IP as API_IP  # the `api` client's address

CHROME_LINUX = ('Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) '
                'Chrome/131.0.0.0 Safari/537.36')
IP = '198.51.100.23'
CLI_IP = '203.0.113.9'
ADDRESS = 'alice@example.com'
SETTINGS = '/user/alice/settings'
# Each System event as its model call, for `alice` acting from IP.
EVENTS = {
    'token.create': lambda alice: credentials.Token.issue(alice, IP),
    'user.password.rotate': lambda alice: workspaces.DatabasePassword.rotate(alice, IP),
    'user.handle.change': lambda alice: alice.change_handle('alicia', IP),
    'user.authentication.reset': lambda alice: credentials.reset_authentication(alice, IP),
    'login_token.confirm': lambda alice: credentials.LoginRequest.start(CLI_IP).confirm(
        alice, IP),
    'user.delete': lambda alice: alice.delete_account(IP),
}


class Undone(Exception):
    """Raised to roll back the transaction an event ran in."""


@pytest.fixture
def browser(client, user):
    """Alice's browser, Chrome on Linux at IP, logged in with a recent password."""
    client.environ_base.update(HTTP_USER_AGENT=CHROME_LINUX, REMOTE_ADDR=IP)
    assert log_in(client, user.handle).status_code == 302
    return client


def queued_by(action):
    """Run `action`; the messages it queued, oldest first."""
    with database.db.connection_context():
        before = {email.id for email in mail.Email.select(mail.Email.id)}
    action()
    with database.db.connection_context():
        return [email for email in mail.Email.select().order_by(mail.Email.created_at,
                                                                mail.Email.id)
                if email.id not in before]


def the_one(emails, kind, user):
    """The only message in `emails`, checked to be `kind` to `user`'s address."""
    assert [(email.kind, email.user_id, email.to_address, email.status) for email in emails] == [
        (kind, user.id, ADDRESS, 'pending')]
    return emails[0]


def rendered(email):
    """(subject, text, parsed HTML) of `email`, checked to hold no secret anywhere and no
    unsubscribe header."""
    subject, text, html_part, headers = mail.render(email)
    assert headers == {'Auto-Submitted': 'auto-generated'}
    everything = '\n'.join([subject, text, html_part, email.data, *headers.values()])
    for secret in MADE_SECRETS | {'test secret key'}:
        assert not secret or secret not in everything
    return subject, text, BeautifulSoup(html_part, 'html.parser')


def facts(page):
    """The HTML part's table of facts, label: value."""
    return {row.th.get_text(strip=True): row.td.get_text(strip=True)
            for row in page.find_all('tr') if row.th}


def says(email, ip=IP, device='Chrome on Linux', **expected):
    """Check that both parts give when (UTC), the IP, the device and `expected` (label:
    value); returns (subject, text, parsed HTML)."""
    subject, text, page = rendered(email)
    when = datetime.datetime.fromisoformat(email.values['at'])
    assert abs(models.utcnow() - when) < datetime.timedelta(minutes=1)
    expected = {'When': f'{when:%Y-%m-%d %H:%M} UTC', 'IP address': ip,
                **({'Device': device} if device else {}), **expected}
    assert {label: facts(page).get(label) for label in expected} == expected
    lines = {line.partition(':')[0]: line.partition(':')[2].strip() for line in text.splitlines()}
    assert {label: lines.get(label) for label in expected} == expected
    assert page.find('title').get_text() == page.find('h1').get_text() == subject
    return subject, text, page


def reset_link_works(client, text, page, handle='alice'):
    """The Reset authentication link is absolute, in both parts, and opens that step."""
    link = page.find('a', string='Reset authentication')['href']
    assert link == f'{mail.Config.public_url}{SETTINGS.replace("alice", handle)}' \
                   '/advanced/reset-authentication'
    assert link in text
    response = client.get(urlsplit(link).path)
    assert response.status_code == 200
    form = html(response).find('form', action=urlsplit(link).path)
    assert form.find('button', string='Reset authentication') is not None


def test_a_token_made_in_the_browser_tells_its_last_4_characters(browser, user):
    emails = queued_by(lambda: browser.post(f'{SETTINGS}/tokens', data={
        'csrf_token': csrf_token(browser, f'{SETTINGS}/tokens')}))
    email = the_one(emails, 'token.create', user)
    token = credentials.Token.get(credentials.Token.user == user.id)
    subject, text, page = says(email, Token=f'pst_…{token.last4}')
    assert subject == f'New API token pst_…{token.last4}'
    reset_link_works(browser, text, page)
    audit = page.find('a', string='Audit Log')['href']
    assert audit in text and browser.get(urlsplit(audit).path).status_code == 200


def test_a_token_made_through_the_api_names_the_token_that_made_it(api, alice, token):
    emails = queued_by(lambda: api('POST', '/api/v0/user/alice/token'))
    email = the_one(emails, 'token.create', alice)
    made = credentials.Token.get(credentials.Token.id != token[0].id)
    says(email, ip=API_IP, device=f'API token pst_…{token[0].last4}',
         Token=f'pst_…{made.last4}')


def test_a_rotation_tells_the_version_and_how_many_workspaces_take_it(browser, alice):
    workspaces.Workspace.provision(alice, 'analytics')
    emails = queued_by(lambda: browser.post(f'{SETTINGS}/profile/password/rotate', data={
        'csrf_token': csrf_token(browser, f'{SETTINGS}/profile')}))
    email = the_one(emails, 'user.password.rotate', alice)
    assert (email.values['version'], email.values['workspaces']) == (2, 1)
    subject, text, _ = says(email, Version='2', Workspaces='1')
    assert subject == 'Your database password was rotated'
    assert workspaces.DatabasePassword.for_user(alice).password not in text


def test_a_handle_change_tells_old_and_new_and_each_host_that_changed(browser, alice):
    for handle in ('analytics', 'staging'):
        workspaces.Workspace.provision(alice, handle)
    emails = queued_by(lambda: browser.post(f'{SETTINGS}/advanced/handle', data={
        'csrf_token': csrf_token(browser, f'{SETTINGS}/advanced'), 'handle': 'alicia',
        'previewed': '1'}))
    email = the_one(emails, 'user.handle.change', alice)
    hosts = [[f'alice-{name}.workspaces.penstock.test', f'alicia-{name}.workspaces.penstock.test']
             for name in ('analytics', 'staging')]
    assert (email.values['old'], email.values['new'], email.values['hosts']) == (
        'alice', 'alicia', hosts)
    subject, text, page = says(email, **{'Old handle': 'alice', 'New handle': 'alicia'})
    assert subject == 'Your handle is now alicia'
    assert [[code.get_text() for code in item.find_all('code')]
            for item in page.find('ul').find_all('li')] == hosts
    for old, new in hosts:
        assert f'{old} → {new}' in text
    reset_link_works(browser, text, page, handle='alicia')


def test_reset_authentication_tells_what_it_ended_and_from_which_browser(browser, alice, token):
    emails = queued_by(lambda: browser.post(f'{SETTINGS}/advanced/reset-authentication', data={
        'csrf_token': csrf_token(browser, f'{SETTINGS}/advanced')}))
    email = the_one(emails, 'user.authentication.reset', alice)
    assert (email.values['sessions'], email.values['tokens'],
            email.values['temporary_tokens']) == (1, 1, 0)
    subject, _, _ = says(email, **{'Sessions ended': '1', 'Tokens revoked': '1',
                                   'CLI logins revoked': '0'})
    assert subject == 'Authentication was reset on your account'


def test_a_verified_cli_login_tells_where_it_was_asked_and_verified_from(browser, alice):
    started = browser.post('/api/v0/login/token', environ_base={'REMOTE_ADDR': CLI_IP})
    request_id = started.get_json()['id']
    emails = queued_by(lambda: browser.patch(f'/api/v0/login/token/{request_id}', headers={
        'X-CSRFToken': csrf_token(browser, f'{SETTINGS}/profile')}))
    email = the_one(emails, 'login_token.confirm', alice)
    assert email.values['requested_from'] == CLI_IP
    subject, text, page = says(email, **{'CLI asked from': CLI_IP})
    assert subject == 'A CLI login was verified'
    reset_link_works(browser, text, page)


def test_deleting_the_account_tells_the_address_it_had_and_keeps_only_that(browser, alice):
    credentials.Token.issue(alice, IP)  # a message of the account's that goes with it
    emails = queued_by(lambda: browser.post(f'{SETTINGS}/advanced/delete', data={
        'csrf_token': csrf_token(browser, f'{SETTINGS}/advanced'), 'confirm': 'alice'}))
    email = the_one(emails, 'user.delete', alice)
    assert models.User.get_or_none(models.User.id == alice.id) is None
    assert [e.kind for e in mail.Email.select().where(mail.Email.user_id == alice.id)] == [
        'user.delete']
    subject, text, page = says(email, Account='alice', **{'Workspaces deleted': '0'})
    assert subject == 'Your Penstock account was deleted'
    assert page.find('a', string='Reset authentication') is None  # nothing left to reset
    signup = page.find('a', string='sign up again')['href']
    assert signup in text and browser.get(urlsplit(signup).path).status_code == 200


@pytest.mark.parametrize('kind', list(EVENTS))
def test_every_system_event_queues_one_message_of_its_kind(alice, kind):
    email = the_one(queued_by(lambda: EVENTS[kind](alice)), kind, alice)
    _, text, _ = says(email, device=None)
    assert 'Device' not in text  # no request acted: nothing to name


@pytest.mark.parametrize('kind', list(EVENTS))
def test_an_event_rolled_back_queues_nothing(alice, kind):
    def undone():
        with pytest.raises(Undone), database.write_transaction():
            EVENTS[kind](alice)
            assert mail.Email.select().where(mail.Email.kind == kind).exists()
            raise Undone
    assert queued_by(undone) == []


@pytest.mark.parametrize('headers', [{}, HTMX])
def test_notifications_say_where_system_emails_go(client, logged_in, headers):
    page = html(client.get(f'{SETTINGS}/notifications', headers=headers))
    line = page.find(id='system-address')
    assert line.find('strong').get_text() == ADDRESS
    assert 'system-address' in page.find(id='system')['aria-describedby'].split()
