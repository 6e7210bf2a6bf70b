"""Verify your email address and Change email in a real Chromium, with JavaScript on and off:
the banner and its Resend button, the banner gone once the link is opened, then Change email
on Profile (asking for the password first when it was typed long ago) and the new address
taking over when its link is opened."""
from urllib.parse import parse_qs, urlsplit

from playwright.sync_api import expect

import addresses
import database
import mail
import models
from tests.browser.helpers import Person, age_the_login, confirm_password, settled, url_ending


def open_the_link(to_address):
    """Open the newest verification link sent to `to_address`, as its owner would. Through the
    model rather than the live server: its access log would print the link's token, which the
    log check rightly refuses (the app's own log redacts `t=`)."""
    with database.db.connection_context():
        email = (mail.Email.select().where(mail.Email.kind == mail.VERIFY,
                                           mail.Email.to_address == to_address)
                 .order_by(mail.Email.created_at.desc()).first())
        _, text, _, _ = mail.render(email)
    [link] = {word for word in text.split() if '/signup/confirm?t=' in word}
    with database.db.connection_context():
        addresses.verify(parse_qs(urlsplit(link).query)['t'][0])


def test_verify_the_address_then_change_it(page, javascript):
    person = Person()
    person.sign_up(page, verify=False)
    banner = page.get_by_role('region', name='Verify your email address')
    expect(banner).to_contain_text(person.email)
    # Set apart from the cards below it: a wider edge on its start side, in another colour.
    edges = banner.evaluate('b => { const s = getComputedStyle(b); return [s.borderLeftWidth,'
                            ' s.borderTopWidth, s.borderLeftColor, s.borderTopColor]; }')
    assert float(edges[0][:-2]) > float(edges[1][:-2]) and edges[2] != edges[3]
    page.set_viewport_size({'width': 360, 'height': 740})  # a phone: nothing scrolls sideways
    assert page.evaluate('document.documentElement.scrollWidth') <= 360
    settled(page)
    banner.get_by_role('button', name='Resend verification email').click()
    expect(page.locator('#flash')).to_have_text(f'We sent a new link to {person.email}.')
    if not javascript:
        expect(page).to_have_url(url_ending('/'))
    expect(banner).to_be_visible()
    with database.db.connection_context():  # a third (the sign-up's was the first)
        addresses.ask_to_verify(models.User.get(models.User.handle == person.handle))
    settled(page)
    banner.get_by_role('button', name='Resend verification email').click()
    expect(page.locator('#flash')).to_contain_text('You can ask for another at')

    open_the_link(person.email)
    page.goto(person.profile_path)
    expect(page.get_by_role('heading', level=2, name='Profile')).to_be_visible()
    expect(banner).to_have_count(0)
    expect(page.locator('#email-current')).to_have_text(f'{person.email} (verified)')
    # The Email card's heading sits at the top of its card, as Database Password's does.
    for card in ('#email-form', '#database-password'):
        assert page.locator(card).evaluate(
            'c => { const s = getComputedStyle(c); return c.querySelector("h3")'
            '.getBoundingClientRect().top - c.getBoundingClientRect().top'
            ' - parseFloat(s.paddingTop) - parseFloat(s.borderTopWidth); }') == 0

    # Change email, with a password typed long ago: asked for first, then the form again.
    age_the_login(person)
    new = f'new-{person.handle}@example.com'
    settled(page)
    page.get_by_label('New email', exact=True).fill(new)
    page.get_by_role('button', name='Change email').click()
    confirm_password(page, person)
    expect(page).to_have_url(url_ending(person.profile_path))
    settled(page)
    # Refused by email-validator, not by the browser's own check of an email field.
    page.get_by_label('New email', exact=True).fill('me@printer.local')
    page.get_by_role('button', name='Change email').click()
    expect(page.locator('#new_email-error')).to_contain_text('Enter one email address')
    settled(page)
    page.get_by_label('New email', exact=True).fill(new)
    field_offset = ('f => f.getBoundingClientRect().top'
                    ' - f.closest("form").getBoundingClientRect().top')
    before = page.get_by_label('New email', exact=True).evaluate(field_offset)
    page.get_by_role('button', name='Change email').click()
    expect(page.locator('#flash')).to_contain_text(f'We sent a link to {new}.')
    expect(page.locator('#email-pending')).to_contain_text(new)
    if javascript:  # sent in place: the note about the pending address moves no control
        assert page.get_by_label('New email', exact=True).evaluate(field_offset) == before
    expect(page.locator('#email-current')).to_have_text(f'{person.email} (verified)')

    open_the_link(new)
    page.reload()
    expect(page.locator('#email-current')).to_have_text(f'{new} (verified)')
    expect(page.locator('#email-pending')).to_have_count(0)
    with database.db.connection_context():
        assert models.User.get(models.User.handle == person.handle).email == new
