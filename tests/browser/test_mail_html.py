"""An email's HTML part as a phone shows it: Chromium at 360 px, scripts off as in a mail
client, renders an announcement whose body holds a long URL and a long word, and the message
fits the screen: nothing is wider than it, and the URL is a link that wraps."""
import database
import mail
import models
from tests.helpers import make_user
from tests.test_announcements import announce
from tests.test_mail_standards import LONG_URL

PHONE = {'width': 360, 'height': 800}


def test_an_announcement_with_a_long_url_fits_a_360_px_screen(app, browser, tmp_path):
    alice = make_user('alice@example.com', 'alice', 'a long password')
    with database.db.connection_context():
        models.Preferences.change(alice, {'tips_and_tricks': True})
    body = f'Read the guide at {LONG_URL} today.\n\nOr this word: {"x" * 200}.'
    assert announce(app, 'tips_and_tricks', subject='A long link', body=body,
                    tmp_path=tmp_path).exit_code == 0
    with database.db.connection_context():
        _, _, html, _ = mail.render(mail.Email.get())
    context = browser.new_context(viewport=PHONE, java_script_enabled=False)
    try:
        page = context.new_page()
        page.set_content(html)
        link = page.get_by_role('link', name=LONG_URL)
        assert link.get_attribute('href') == LONG_URL
        box = link.bounding_box()
        assert box['x'] >= 0 and box['x'] + box['width'] <= PHONE['width']
        assert box['height'] > 3 * 16  # it wraps onto several lines
        widths = page.evaluate('[document.documentElement.scrollWidth, document.body.scrollWidth]')
        assert max(widths) <= PHONE['width']
    finally:
        context.close()
