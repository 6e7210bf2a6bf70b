"""The default avatar found by the Gravatar protocol: against a fake Gravatar on loopback that
finds an image, finds none, hangs, is down, sends junk or trickles; and when turned off."""
import http.server
import io
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import peewee
import pytest
from PIL import Image

import database
import gravatar
import imaging
import models
from app import DEMO_HANDLE
from tests.helpers import PASSWORD, csrf_token, html, offered

GREEN, ORANGE = (40, 170, 60), (240, 140, 30)
SIGNUP_EMAIL = '  Carol@Example.COM '  # as typed: spaces around, mixed case
# sha256('carol@example.com'), worked out once: the test does not share the code's arithmetic
CAROL_HASH = 'e0d47ca1bc1eb62e650fc1fd660a9bfbf7cba8dc6337d81df7ea9aa9071a24a5'
CAROL_PATH = f'/{CAROL_HASH}?s=460&d=404'
LOOKUP_TIMEOUT = 0.5


def encoded(image, format):
    buffer = io.BytesIO()
    image.save(buffer, format)
    return buffer.getvalue()


def decoded(data):
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def near(pixel, colour, tolerance=12):
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, colour))


class FakeGravatar(http.server.ThreadingHTTPServer):
    """Plays Gravatar on 127.0.0.1: records every path asked for and answers as the test
    says. A held answer waits until `release` is set (at the latest, when the test ends)."""

    daemon_threads = False  # server_close() waits for every handler, so none outlives a test

    def __init__(self):
        super().__init__(('127.0.0.1', 0), FakeGravatarHandler)
        self.url = f'http://127.0.0.1:{self.server_port}/avatar/'
        self.paths = []
        self.arrived = threading.Event()  # a request came in
        self.release = threading.Event()
        self.respond(404)

    def respond(self, status, body=b'', content_type='image/png', hold=False):
        self.status, self.body, self.content_type, self.hold = status, body, content_type, hold
        self.trickling = self.raw = False

    def trickle(self):
        """Answer 200 with a large image one byte at a time, for as long as the client reads."""
        self.respond(200, b'\x89PNG\r\n\x1a\n')
        self.trickling = True

    def speak_no_http(self):
        """Answer with something that is not HTTP at all."""
        self.respond(200, b'SSH-2.0-OpenSSH_9.6\r\n')
        self.raw = True


class FakeGravatarHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        fake = self.server
        fake.paths.append(self.path.removeprefix('/avatar'))
        fake.arrived.set()
        if fake.hold:
            fake.release.wait()
        try:
            if fake.raw:
                self.wfile.write(fake.body)
                return
            self.send_response(fake.status)
            self.send_header('Content-Type', fake.content_type)
            self.send_header('Content-Length', str(1_000_000 if fake.trickling
                                                   else len(fake.body)))
            self.end_headers()
            self.wfile.write(fake.body)
            # A byte every 10 ms: far faster than any read timeout, far slower than an image.
            while fake.trickling and not fake.release.wait(0.01):
                self.wfile.write(b'\x00')
                self.wfile.flush()
        except ConnectionError:  # the lookup hung up: as it should when it gives up
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_gravatar(monkeypatch):
    monkeypatch.setenv('no_proxy', '127.0.0.1')  # loopback only, even behind a proxy
    fake = FakeGravatar()
    thread = threading.Thread(target=fake.serve_forever, args=(0.05,), name='fake-gravatar')
    thread.start()
    yield fake
    fake.release.set()
    fake.shutdown()
    fake.server_close()
    thread.join()


@pytest.fixture
def gravatar_app(app, fake_gravatar):
    """The app with lookups on, against the fake Gravatar, with a short timeout."""
    app.config.update(GRAVATAR_ENABLED=True, GRAVATAR_URL=fake_gravatar.url,
                      GRAVATAR_TIMEOUT=LOOKUP_TIMEOUT)
    return app


@pytest.fixture
def lookups(gravatar_app, fake_gravatar, monkeypatch):
    """Every lookup the app starts, as Futures; each is over before the test's app goes."""
    futures = []
    real = gravatar.look_up_later

    def recorded(app, user):
        future = real(app, user)
        futures.append(future)
        return future

    monkeypatch.setattr(gravatar, 'look_up_later', recorded)
    yield futures
    fake_gravatar.release.set()
    for future in futures:
        if future is not None:
            future.result(timeout=10)


@pytest.fixture
def background(fake_gravatar):
    """Run a call off the test's thread, so a call that hangs fails the test, not the run."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix='test-background')
    yield pool.submit
    fake_gravatar.release.set()
    pool.shutdown(wait=True)


def sign_up(client, email=SIGNUP_EMAIL, handle='carol'):
    token = csrf_token(client, '/signup')
    return client.post('/signup', data={'email': email, 'handle': handle, 'password': PASSWORD,
                                        'csrf_token': token})


def carol():
    with database.db.connection_context():
        user = models.User.get(models.User.handle == 'carol')
        return user, models.Avatar.for_user(user.id)


def shown_avatar(client):
    """The large avatar carol's profile card offers (to 2× screens), and the image it serves."""
    page = html(client.get('/user/carol/settings/profile'))
    images = offered(page.find('label', attrs={'for': 'avatar-file'}).find('img'))
    src = images['2x']
    assert images['src'] == images['1x'] == src.replace('/460.webp', '/96.webp'), images
    response = client.get(src)
    assert response.status_code == 200 and response.mimetype == 'image/webp'
    return src, response.get_data()


def signed_up_with_a_lookup(client, lookups):
    """Sign carol up through the form; the lookup it started."""
    response = sign_up(client)
    assert response.status_code == 302 and response.headers['Location'] == '/'
    assert len(lookups) == 1 and lookups[0] is not None
    return lookups[0]


# The address

def test_the_lookup_url_is_the_sha256_of_the_trimmed_lower_cased_email():
    expected = 'https://g.test/avatar/' + CAROL_HASH + '?s=460&d=404'
    assert gravatar.url_for_email('https://g.test/avatar/', 'carol@example.com') == expected
    assert gravatar.url_for_email('https://g.test/avatar', SIGNUP_EMAIL + '\n') == expected


# Found

@pytest.mark.parametrize('format', ['PNG', 'JPEG'])
def test_a_public_avatar_found_at_signup_becomes_the_default(client, fake_gravatar, lookups,
                                                             format):
    found = Image.new('RGB', (460, 460), GREEN)
    fake_gravatar.respond(200, encoded(found, format), f'image/{format.lower()}', hold=True)
    lookup = signed_up_with_a_lookup(client, lookups)
    generated_src, generated = shown_avatar(client)
    assert carol()[1].default_source == 'generated'

    fake_gravatar.release.set()
    assert lookup.result(timeout=10) is True
    user, avatar = carol()
    assert avatar.default_source == 'gravatar' and user.avatar_version == 2
    src, served = shown_avatar(client)
    assert src != generated_src and src == f'/avatars/{user.id}/2/460.webp'
    image = decoded(served)
    assert (image.format, image.size) == ('WEBP', (460, 460))
    assert all(near(image.getpixel((x, y)), GREEN) for x in (5, 230, 454) for y in (5, 230, 454))
    assert served != generated
    assert fake_gravatar.paths == [CAROL_PATH]  # asked once, for the normalised address


def test_a_found_avatar_is_served_by_us_so_browsers_contact_no_third_party(client,
                                                                           fake_gravatar,
                                                                           lookups):
    fake_gravatar.respond(200, encoded(Image.new('RGB', (300, 300), ORANGE), 'PNG'))
    assert signed_up_with_a_lookup(client, lookups).result(timeout=10) is True
    response = client.get('/user/carol/settings/profile')
    user, _ = carol()
    sources = [url for img in html(response).find_all('img') for url in offered(img).values()]
    assert f'/avatars/{user.id}/2/460.webp' in sources
    assert all(src.startswith('/') and not src.startswith('//') for src in sources), sources
    assert "img-src 'self'" in response.headers['Content-Security-Policy'].split('; ')
    assert len(fake_gravatar.paths) == 1  # showing the page asked Gravatar nothing more


# Not found, or not in time, or not an image: the generated avatar stays

def assert_generated_stays(client):
    user, avatar = carol()
    assert avatar.default_source == 'generated' and user.avatar_version == 1
    assert shown_avatar(client)[1] == imaging.generated(avatar.seed)[0]


def test_no_public_avatar_keeps_the_generated_one(client, fake_gravatar, lookups):
    fake_gravatar.respond(404, b'Not Found', 'text/plain')
    assert signed_up_with_a_lookup(client, lookups).result(timeout=10) is False
    assert fake_gravatar.paths == [CAROL_PATH]
    assert_generated_stays(client)


def test_signup_does_not_wait_for_the_lookup(client, gravatar_app, fake_gravatar, lookups):
    gravatar_app.config['GRAVATAR_TIMEOUT'] = 20  # only the release below can end it
    fake_gravatar.respond(200, encoded(Image.new('RGB', (460, 460), GREEN), 'PNG'), hold=True)
    lookup = signed_up_with_a_lookup(client, lookups)
    assert fake_gravatar.arrived.wait(timeout=10)
    assert not lookup.done()  # the person is signed in while Gravatar has not answered
    assert_generated_stays(client)
    fake_gravatar.release.set()
    assert lookup.result(timeout=10) is True


def test_a_gravatar_that_does_not_answer_in_time_keeps_the_generated_avatar(
        client, fake_gravatar, lookups):
    fake_gravatar.respond(200, encoded(Image.new('RGB', (460, 460), GREEN), 'PNG'), hold=True)
    lookup = signed_up_with_a_lookup(client, lookups)
    # Only the timeout can end it: the server holds its answer until the test is over.
    assert lookup.result(timeout=10) is False
    assert fake_gravatar.paths == [CAROL_PATH]
    assert_generated_stays(client)


def test_a_gravatar_that_is_down_keeps_the_generated_avatar(client, gravatar_app, lookups):
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
    gravatar_app.config['GRAVATAR_URL'] = f'http://127.0.0.1:{port}/avatar/'
    assert signed_up_with_a_lookup(client, lookups).result(timeout=10) is False
    assert_generated_stays(client)


@pytest.mark.parametrize('body, content_type', [
    (b'\x89PNG\r\n\x1a\n' + bytes(200), 'image/png'),
    (b'<html><body>Rate limited</body></html>', 'image/png'),
    (encoded(Image.new('RGB', (460, 460), GREEN), 'GIF'), 'image/gif'),
    (b'', 'image/png'),
], ids=['broken-png', 'html', 'gif', 'empty'])
def test_a_gravatar_answer_that_is_no_usable_image_keeps_the_generated_avatar(
        client, fake_gravatar, lookups, body, content_type):
    fake_gravatar.respond(200, body, content_type)
    assert signed_up_with_a_lookup(client, lookups).result(timeout=10) is False
    assert fake_gravatar.paths == [CAROL_PATH]
    assert_generated_stays(client)


def test_a_lookup_that_breaks_is_logged_and_the_generated_avatar_stays(
        client, fake_gravatar, lookups, monkeypatch, caplog):
    def locked(*args):
        raise peewee.OperationalError('database is locked')

    monkeypatch.setattr(models.Avatar, 'adopt_found', locked)
    fake_gravatar.respond(200, encoded(Image.new('RGB', (460, 460), GREEN), 'PNG'))
    assert signed_up_with_a_lookup(client, lookups).result(timeout=10) is False
    user, _ = carol()
    failures = [r for r in caplog.records if r.name == 'gravatar' and r.levelname == 'ERROR']
    assert len(failures) == 1 and user.id in failures[0].getMessage()
    assert isinstance(failures[0].exc_info[1], peewee.OperationalError)
    assert_generated_stays(client)


def test_a_gravatar_that_trickles_bytes_is_cut_off_at_the_deadline(fake_gravatar, background):
    fake_gravatar.trickle()  # every read gets a byte in time; only a deadline in all ends it
    fetch = background(gravatar.fetch, fake_gravatar.url + 'x', LOOKUP_TIMEOUT)
    assert fetch.result(timeout=10) is None


def test_a_server_that_does_not_speak_http_is_no_avatar(fake_gravatar, background):
    fake_gravatar.speak_no_http()
    fetch = background(gravatar.fetch, fake_gravatar.url + 'x', LOOKUP_TIMEOUT)
    assert fetch.result(timeout=10) is None


def test_an_image_larger_than_an_upload_may_be_is_not_taken(fake_gravatar, background):
    fake_gravatar.respond(200, b'\x89PNG\r\n\x1a\n' + bytes(imaging.UPLOAD_LIMIT))
    fetch = background(gravatar.fetch, fake_gravatar.url + 'x', 10)
    assert fetch.result(timeout=10) is None


def test_a_lookup_for_an_account_deleted_meanwhile_stores_nothing(gravatar_app, fake_gravatar,
                                                                  background):
    fake_gravatar.respond(200, encoded(Image.new('RGB', (460, 460), GREEN), 'PNG'), hold=True)
    with database.db.connection_context():
        user = models.User.sign_up('carol@example.com', 'carol', PASSWORD)
    lookup = background(gravatar.look_up, dict(gravatar_app.config), user.id, user.email)
    assert fake_gravatar.arrived.wait(timeout=10)
    with database.db.connection_context():
        user.delete_instance()
    fake_gravatar.release.set()
    assert lookup.result(timeout=10) is False
    with database.db.connection_context():
        assert models.Avatar.select().count() == 0


# Turned off

def test_with_lookups_turned_off_gravatar_is_never_asked(client, gravatar_app, fake_gravatar,
                                                         lookups):
    gravatar_app.config['GRAVATAR_ENABLED'] = False
    assert sign_up(client).status_code == 302
    assert lookups == [None]
    assert fake_gravatar.paths == []
    assert_generated_stays(client)


# Accounts made without the signup form

def test_the_demo_user_and_older_accounts_get_a_generated_avatar_when_first_shown(
        app, fake_gravatar, lookups):
    result = app.test_cli_runner().invoke(args=['demo'])
    assert result.exit_code == 0, result.output
    with database.db.connection_context():
        demo = models.User.get(models.User.handle == DEMO_HANDLE)
        models.Avatar.delete().execute()  # as for an account from before avatars
    response = app.test_client().get(f'/avatars/{demo.id}/1/460.webp')
    assert response.status_code == 200
    image = decoded(response.get_data())
    assert (image.format, image.size) == ('WEBP', (460, 460))
    with database.db.connection_context():
        avatar = models.Avatar.get(models.Avatar.user == demo.id)
    assert avatar.default_source == 'generated'
    assert response.get_data() == imaging.generated(avatar.seed)[0]
    assert lookups == [] and fake_gravatar.paths == []
