"""Avatars in a real Chromium: upload, crop, Save, Reset and Cancel, with and without JS; the
image each screen density takes; the crop step's script, loaded only when the step appears."""
import io
import re

import pytest
from PIL import Image
from playwright.sync_api import expect

import imaging
from tests.browser.helpers import is_same_document, mark_document, settled, url_ending
from tests.helpers import TOO_MANY_UPLOADS, every_turn_taken
from tests.images import BUSY

WIDTH, HEIGHT = 800, 600
QUADRANTS = {'red': ((0, 0), (255, 0, 0)), 'green': ((400, 0), (0, 255, 0)),
             'blue': ((0, 300), (0, 0, 255)), 'yellow': ((400, 300), (255, 255, 0))}
MEGABYTE = 1024 * 1024

# Keeps what the upload's progress bar showed at each progress event htmx reported.
RECORD_PROGRESS = '''() => {
  window.uploadProgress = [];
  document.addEventListener('htmx:xhr:progress', () => {
    const bar = document.querySelector('progress');
    window.uploadProgress.push({shown: bar.checkVisibility(), value: bar.value});
  });
}'''


@pytest.fixture
def screen(browser, live_server):
    """Open a page in a fresh context on a screen of `ratio` device pixels per CSS pixel."""
    contexts = []

    def open_page(ratio):
        context = browser.new_context(base_url=live_server, device_scale_factor=ratio)
        context.set_default_timeout(10_000)
        contexts.append(context)
        return context.new_page()

    yield open_page
    for context in contexts:
        context.close()


@pytest.fixture
def quadrants(tmp_path):
    """An 800×600 PNG in four quarters: red, green (top), blue, yellow (bottom)."""
    image = Image.new('RGB', (WIDTH, HEIGHT))
    for (left, top), colour in QUADRANTS.values():
        image.paste(colour, (left, top, left + WIDTH // 2, top + HEIGHT // 2))
    path = tmp_path / 'quadrants.png'
    image.save(path)
    return path


def change_avatar(page):
    return page.get_by_label('Change avatar')


def card_avatar(page):
    return page.get_by_role('region', name='Avatar and account').locator('img')


def header_avatar(page):
    return page.get_by_role('button', name='Account menu').locator('img')


def crop_step(page):
    return page.get_by_role('region', name='Edit your avatar')


def crop_fields(page):
    step = crop_step(page)
    return (step.get_by_label('x (from the left)'), step.get_by_label('y (from the top)'),
            step.get_by_label('Size', exact=True))


def expect_box(page, x, y, size):
    """The crop form will send this square (in the image's pixels)."""
    for field, value in zip(crop_fields(page), (x, y, size)):
        expect(field).to_have_value(str(value))


def avatar_pixels(page, src):
    """The avatar image at `src`, as the browser would get it."""
    response = page.request.get(src)
    assert response.ok
    return Image.open(io.BytesIO(response.body())).convert('RGB')


def assert_all(image, colour):
    """Every pixel (lossy WebP aside) is `colour`: the crop kept one quarter, nothing else."""
    extrema = image.getextrema()
    assert all(abs(low - want) < 40 and abs(high - want) < 40
               for (low, high), want in zip(extrema, colour)), (extrema, colour)


def drag(page, start, by):
    """Press the mouse at `start`, move it by `by` in a few steps, release."""
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(start[0] + by[0], start[1] + by[1], steps=5)
    page.mouse.up()


def test_upload_crop_save_and_reset_change_every_avatar_without_reloading(
        new_page, person, quadrants, axe):
    page = new_page(javascript=True)
    audit = axe(page)
    person.sign_up(page)
    settled(page)
    default = {'card': card_avatar(page).get_attribute('src'),
               'header': header_avatar(page).get_attribute('src')}
    default_pixels = avatar_pixels(page, default['card'])
    expect(page.get_by_role('progressbar', name='Upload progress')).to_be_hidden()
    page.evaluate(RECORD_PROGRESS)
    mark_document(page)

    change_avatar(page).set_input_files(quadrants)
    heading = page.get_by_role('heading', name='Edit your avatar')
    expect(heading).to_be_focused()
    shown = page.evaluate('window.uploadProgress')
    assert shown and all(event['shown'] for event in shown), shown
    assert shown[-1]['value'] == 100, shown
    settled(page)
    audit('crop step')

    square = crop_step(page).get_by_role('slider', name='Crop square')
    image = crop_step(page).get_by_role('img', name='The image you chose')
    expect(image).to_have_js_property('complete', True)
    scale = WIDTH / image.bounding_box()['width']  # image pixels per CSS pixel
    expect_box(page, 100, 0, 600)  # the largest square in the middle, to begin with

    square.focus()
    for _ in range(10):
        page.keyboard.press('-')  # 5% of the short side smaller each time, about the centre
    expect_box(page, 250, 150, 300)
    page.keyboard.press('+')
    expect_box(page, 235, 135, 330)
    page.keyboard.press('-')
    expect_box(page, 250, 150, 300)

    corner = square.bounding_box()
    drag(page, (corner['x'] + corner['width'] - 4, corner['y'] + corner['height'] - 4),
         (200 / scale, 200 / scale))
    expect_box(page, 250, 150, 450)  # as large as fits below and right of its top-left corner

    for _ in range(5):
        page.keyboard.press('-')
    expect_box(page, 325, 225, 300)
    middle = square.bounding_box()
    drag(page, (middle['x'] + middle['width'] / 2, middle['y'] + middle['height'] / 2),
         (200 / scale, 100 / scale))
    expect_box(page, 500, 300, 300)  # pushed into the bottom-right corner, no further

    page.keyboard.press('Shift+ArrowLeft')
    page.keyboard.press('ArrowUp')
    expect_box(page, 440, 294, 300)
    x, y, _ = crop_fields(page)
    x.fill('480')  # typing a number moves the square there
    y.fill('300')
    frame, placed = image.bounding_box(), square.bounding_box()
    assert (placed['x'] - frame['x']) * scale == pytest.approx(480, abs=2)
    assert (placed['y'] - frame['y']) * scale == pytest.approx(300, abs=2)
    assert placed['width'] * scale == pytest.approx(300, abs=2)

    crop_step(page).get_by_role('button', name='Save').click()
    expect(page.get_by_role('status')).to_have_text('Avatar saved.')
    expect(change_avatar(page)).to_be_focused()
    expect(card_avatar(page)).not_to_have_attribute('src', default['card'])
    expect(header_avatar(page)).not_to_have_attribute('src', default['header'])
    saved = card_avatar(page).get_attribute('src')
    assert_all(avatar_pixels(page, saved), QUADRANTS['yellow'][1])
    settled(page)
    audit('profile with a custom avatar')

    page.get_by_role('button', name='Reset').click()
    expect(page.get_by_role('status')).to_have_text('Avatar reset to the default.')
    expect(change_avatar(page)).to_be_focused()
    expect(card_avatar(page)).not_to_have_attribute('src', saved)
    expect(page.get_by_role('button', name='Reset')).to_have_count(0)
    reset = avatar_pixels(page, card_avatar(page).get_attribute('src'))
    assert reset.tobytes() == default_pixels.tobytes()
    assert is_same_document(page), 'every change was swapped in, with no page load'
    audit.assert_clean('avatar flow')


def test_without_javascript_the_numbers_crop_the_avatar_and_cancel_keeps_it(
        new_page, person, quadrants):
    page = new_page(javascript=False)
    person.sign_up(page)
    default = {'card': card_avatar(page).get_attribute('src'),
               'header': header_avatar(page).get_attribute('src')}

    change_avatar(page).set_input_files(quadrants)
    page.get_by_role('button', name='Upload').click()
    expect(page).to_have_url(re.compile(r'/profile/avatar/edit\?upload='))
    expect(page.get_by_role('heading', name='Edit your avatar')).to_be_visible()
    expect(page.get_by_role('slider')).to_have_count(0)
    expect_box(page, 100, 0, 600)
    for field, value in zip(crop_fields(page), ('0', '0', '300')):
        field.fill(value)
    crop_step(page).get_by_role('button', name='Save').click()

    expect(page).to_have_url(url_ending(person.profile_path))
    expect(page.get_by_role('status')).to_have_text('Avatar saved.')
    expect(card_avatar(page)).not_to_have_attribute('src', default['card'])
    expect(header_avatar(page)).not_to_have_attribute('src', default['header'])
    saved = {'card': card_avatar(page).get_attribute('src'),
             'header': header_avatar(page).get_attribute('src')}
    assert_all(avatar_pixels(page, saved['card']), QUADRANTS['red'][1])

    change_avatar(page).set_input_files(quadrants)
    page.get_by_role('button', name='Upload').click()
    expect(page.get_by_role('heading', name='Edit your avatar')).to_be_visible()
    crop_step(page).get_by_role('button', name='Cancel').click()
    expect(page).to_have_url(url_ending(person.profile_path))
    expect(page.get_by_role('heading', name='Edit your avatar')).to_have_count(0)
    expect(card_avatar(page)).to_have_attribute('src', saved['card'])
    expect(header_avatar(page)).to_have_attribute('src', saved['header'])
    assert_all(avatar_pixels(page, saved['card']), QUADRANTS['red'][1])


def test_a_file_over_the_limit_is_refused_before_it_is_sent_and_by_the_server_too(
        new_page, person, quadrants, tmp_path):
    page = new_page(javascript=True)
    person.sign_up(page)
    settled(page)
    posts = []
    page.on('request', lambda request: posts.append(request.url) if request.method == 'POST'
            else None)
    huge = tmp_path / 'huge.png'  # a path, which Chromium reads itself: quicker than bytes
    huge.write_bytes(b'\x89PNG\r\n\x1a\n' + bytes(int(12.25 * MEGABYTE)))

    change_avatar(page).set_input_files(huge)
    refusal = 'The file is 12.3 MB; the limit is 10 MB. Choose a smaller image.'
    expect(page.get_by_role('alert')).to_have_text(refusal)
    expect(change_avatar(page)).to_have_attribute('aria-invalid', 'true')
    expect(change_avatar(page)).to_have_accessible_description(re.compile(re.escape(refusal)))
    expect(page.get_by_role('progressbar', name='Upload progress')).to_be_hidden()

    # Should the check not run (an old script, say), the server's 413 shows in the card.
    change_avatar(page).evaluate('input => delete input.dataset.maxBytes')
    change_avatar(page).set_input_files(huge)
    expect(page.get_by_role('alert')).to_have_text(
        'The file is larger than 10 MB. Choose a smaller image.')
    expect(change_avatar(page)).to_be_focused()

    settled(page)  # the swapped-in card listens for `change` only once htmx has settled it
    change_avatar(page).set_input_files(quadrants)  # a smaller one goes through
    expect(page.get_by_role('heading', name='Edit your avatar')).to_be_focused()
    assert len(posts) == 2, 'only the server-checked and the smaller file were sent'


def test_a_busy_server_and_too_many_uploads_are_said_beside_the_file_input(
        page, javascript, person, quadrants, monkeypatch):
    person.sign_up(page)
    if javascript:
        settled(page)

    def choose(path):
        change_avatar(page).set_input_files(path)
        if not javascript:
            page.get_by_role('button', name='Upload').click()

    # The live server runs in this process: take every turn to decode, as other images would.
    with every_turn_taken(monkeypatch):
        choose(quadrants)
        expect(page.get_by_role('alert')).to_have_text(BUSY)
    expect(change_avatar(page)).to_have_attribute('aria-invalid', 'true')

    # That was the first upload this minute; nine more (refused ones count too), then one over.
    token = page.locator('input[name="csrf_token"]').first.input_value()
    for _ in range(9):
        response = page.request.post(person.profile_path + '/avatar', multipart={
            'csrf_token': token,
            'avatar': {'name': 'empty.png', 'mimeType': 'image/png', 'buffer': b''}})
        assert response.status == 422
    choose(quadrants)
    expect(page.get_by_role('alert')).to_have_text(TOO_MANY_UPLOADS)
    expect(change_avatar(page)).to_have_accessible_description(
        re.compile(re.escape(TOO_MANY_UPLOADS)))
    expect(page.get_by_role('heading', name='Edit your avatar')).to_have_count(0)


@pytest.mark.parametrize('ratio, card_image, fetched', [
    (1, '96.webp', {'96.webp'}),  # the header's image again: nothing more to fetch
    (2, '460.webp', {'96.webp', '460.webp'}),
    (3, '460.webp', {'96.webp', '460.webp'}),
])
def test_the_card_shows_the_avatar_at_the_size_the_screen_needs(screen, person, ratio,
                                                                card_image, fetched):
    page = screen(ratio)
    avatars = []
    page.on('request', lambda request: avatars.append(request.url)
            if '/avatars/' in request.url else None)
    person.sign_up(page)
    for avatar in (card_avatar(page), header_avatar(page)):
        expect(avatar).to_have_js_property('complete', True)
    card = card_avatar(page).evaluate('img => img.currentSrc')
    assert card.endswith('/' + card_image), card
    assert header_avatar(page).evaluate('img => img.currentSrc').endswith('/96.webp')
    assert {url.rsplit('/', 1)[1] for url in avatars} == fetched, avatars
    assert len({url.rsplit('/', 2)[0] for url in avatars}) == 1  # one user, one version


def test_the_crop_script_loads_only_with_the_crop_step_and_works_on_its_own_page(
        new_page, person, quadrants):
    page = new_page(javascript=True)
    scripts = []
    page.on('request', lambda request: scripts.append(request.url)
            if re.search('/static/(js|css)/', request.url) else None)
    person.sign_up(page)
    settled(page)
    assert [url for url in scripts if '/js/app.' in url], scripts
    assert not [url for url in scripts if '/crop.' in url], 'Profile alone needs no crop'

    # The crop step as a page of its own (where an upload without JavaScript leads), opened in
    # this browser with JavaScript.
    card = page.get_by_role('region', name='Avatar and account')
    form = card.locator('form', has=change_avatar(page))
    token = form.locator('input[name="csrf_token"]').get_attribute('value')
    sent = page.request.post(form.get_attribute('action'), max_redirects=0, multipart={
        'csrf_token': token,
        'avatar': {'name': 'quadrants.png', 'mimeType': 'image/png',
                   'buffer': quadrants.read_bytes()}})
    assert sent.status == 303, sent.status
    page.goto(sent.headers['location'])
    square = crop_step(page).get_by_role('slider', name='Crop square')
    expect(square).to_be_visible()
    expect_box(page, 100, 0, 600)
    square.focus()
    page.keyboard.press('-')
    expect_box(page, 115, 15, 570)
    assert len([url for url in scripts if '/js/crop.' in url]) == 1, scripts
    assert len([url for url in scripts if '/css/crop.' in url]) == 1, scripts
    # Styled by crop.css: the image fits the stage, the preview is round.
    expect(crop_step(page).get_by_role('img', name='Your avatar with this square')).to_have_css(
        'border-radius', '50%')


def test_the_crop_steps_stylesheet_is_fetched_once_as_the_upload_starts(
        new_page, person, quadrants):
    page = new_page(javascript=True)
    sheets = []
    page.on('request', lambda request: sheets.append(request.url)
            if '/static/css/' in request.url else None)
    person.sign_up(page)
    settled(page)
    assert sheets and not [url for url in sheets if '/crop.' in url], sheets
    held = []
    page.route('**/settings/profile/avatar', lambda route: held.append(route))
    change_avatar(page).set_input_files(quadrants)
    expect(page.locator('head link[href*="/css/crop."]')).to_have_count(1)
    expect(page.get_by_role('progressbar', name='Upload progress')).to_be_visible()
    held[0].continue_()
    step = crop_step(page)
    expect(step.get_by_role('heading', name='Edit your avatar')).to_be_focused()
    expect(step.get_by_role('img', name='Your avatar with this square')).to_have_css(
        'border-radius', '50%')
    assert len([url for url in sheets if '/crop.' in url]) == 1, sheets


# Issue 16: the card shows the avatar can be changed and keeps its layout; the upload's
# progress and errors; the crop step's small images, round preview and no-JS square.

NEITHER = 'Only JPEG and PNG images can be used; this file is neither.'
PHONE = dict(viewport={'width': 360, 'height': 740}, is_mobile=True, has_touch=True)
DESKTOP = dict(viewport={'width': 1280, 'height': 800})


@pytest.fixture
def sized(browser, live_server):
    """Open a page in a fresh context with `options` (a viewport, mobile emulation)."""
    contexts = []

    def open_page(javascript=True, **options):
        context = browser.new_context(base_url=live_server, java_script_enabled=javascript,
                                      **options)
        context.set_default_timeout(10_000)
        contexts.append(context)
        return context.new_page()

    yield open_page
    for context in contexts:
        context.close()


@pytest.fixture
def tiny(tmp_path):
    """A 50×40 PNG: red with a green top-left quarter."""
    image = Image.new('RGB', (50, 40), (255, 0, 0))
    image.paste((0, 255, 0), (0, 0, 25, 20))
    path = tmp_path / 'tiny.png'
    image.save(path)
    return path


def profile_card(page):
    return page.get_by_role('region', name='Avatar and account')


def facts_in_card(page):
    """Where the Handle and Email facts are, from the card's top-left corner."""
    card = profile_card(page).bounding_box()
    facts = profile_card(page).locator('dl').bounding_box()
    return {'left': facts['x'] - card['x'], 'top': facts['y'] - card['y'],
            'width': facts['width']}


def fits_the_phone(page):
    """Nothing is wider than the 360 px screen, and the card, centred, keeps a margin on the
    right as on the left (nothing in it pushes it wider than its column)."""
    assert page.evaluate('document.documentElement.scrollWidth') <= 360
    card = page.locator('#profile-card').bounding_box()
    assert 360 - (card['x'] + card['width']) == pytest.approx(card['x'], abs=1), card


def test_the_avatar_always_shows_it_can_be_changed_and_saving_one_leaves_the_facts_put(
        sized, person, quadrants, axe):
    page = sized(**DESKTOP)
    audit = axe(page)
    person.sign_up(page)
    settled(page)
    page.mouse.move(0, 0)  # nothing hovered, nothing focused
    label = profile_card(page).locator('label[for="avatar-file"]')
    badge = label.evaluate('''label => {
      const style = getComputedStyle(label, '::after');
      return {content: style.content, display: style.display, opacity: style.opacity};
    }''')
    assert 'Edit' in badge['content'] and badge['display'] != 'none', badge
    assert badge['opacity'] == '1', badge
    expect(change_avatar(page)).to_have_accessible_name('Change avatar')
    expect(page.get_by_label('Edit', exact=True)).to_have_count(0)
    before = facts_in_card(page)
    left = profile_card(page).locator('dl').bounding_box()['x']

    change_avatar(page).set_input_files(quadrants)
    expect(page.get_by_role('heading', name='Edit your avatar')).to_be_focused()
    settled(page)
    crop_step(page).get_by_role('button', name='Save').click()
    expect(profile_card(page).get_by_role('button', name='Reset')).to_be_visible()
    settled(page)
    assert facts_in_card(page) == pytest.approx(before, abs=0.5)
    assert profile_card(page).locator('dl').bounding_box()['x'] == pytest.approx(left, abs=0.5)
    audit('profile with a custom avatar')

    profile_card(page).get_by_role('button', name='Reset').click()
    expect(profile_card(page).get_by_role('button', name='Reset')).to_have_count(0)
    settled(page)
    assert facts_in_card(page) == pytest.approx(before, abs=0.5)
    audit.assert_clean('profile card')


def test_on_a_phone_the_card_and_the_crop_step_fit_the_screen(sized, person, quadrants,
                                                              javascript):
    page = sized(javascript=javascript, **PHONE)
    person.sign_up(page)
    if javascript:
        settled(page)
    fits_the_phone(page)
    column = profile_card(page).locator('.avatar-column').bounding_box()
    facts = profile_card(page).locator('dl').bounding_box()
    card = profile_card(page).bounding_box()
    assert facts['y'] >= column['y'] + column['height']  # stacked: the facts under the avatar
    assert facts['x'] + facts['width'] <= card['x'] + card['width']

    change_avatar(page).set_input_files(quadrants)
    if not javascript:
        page.get_by_role('button', name='Upload').click()
    expect(page.get_by_role('heading', name='Edit your avatar')).to_be_visible()
    image = crop_step(page).get_by_role('img', name='The image you chose')
    expect(image).to_have_js_property('complete', True)
    fits_the_phone(page)
    assert image.bounding_box()['width'] <= 360
    crop_step(page).get_by_role('button', name='Save').click()
    expect(profile_card(page).get_by_role('button', name='Reset')).to_be_visible()
    fits_the_phone(page)


def test_choosing_a_new_file_takes_back_the_last_error_and_the_upload_shows_its_progress(
        new_page, person, quadrants, tmp_path):
    page = new_page(javascript=True)
    person.sign_up(page)
    settled(page)
    gif = tmp_path / 'picture.png'
    gif.write_bytes(b'GIF89a' + bytes(64))
    change_avatar(page).set_input_files(gif)
    expect(page.get_by_role('alert')).to_have_text(NEITHER)
    expect(change_avatar(page)).to_have_attribute('aria-invalid', 'true')
    settled(page)

    held = []  # the next upload waits here until the test lets it go
    page.route('**/settings/profile/avatar', lambda route: held.append(route))
    change_avatar(page).set_input_files(quadrants)
    bar = page.get_by_role('progressbar', name='Upload progress')
    expect(bar).to_be_visible()
    expect(page.get_by_role('alert')).to_have_count(0)
    expect(profile_card(page).get_by_text(NEITHER)).to_have_count(0)
    expect(change_avatar(page)).not_to_have_attribute('aria-invalid', 'true')
    expect(change_avatar(page)).to_have_accessible_description(imaging.LIMITS)
    shown = bar.bounding_box()
    assert shown['height'] >= 8 and shown['width'] >= 100, shown
    track = bar.evaluate('bar => getComputedStyle(bar).backgroundColor')
    assert track not in ('rgba(0, 0, 0, 0)', 'transparent'), track
    expect(profile_card(page).get_by_text(re.compile(r'^Uploading… \d{1,3}%$'))).to_be_visible()

    assert len(held) == 1
    held[0].continue_()
    expect(page.get_by_role('heading', name='Edit your avatar')).to_be_focused()


def test_a_small_image_is_shown_large_enough_to_crop_with_a_warning(new_page, person, tiny,
                                                                    axe):
    page = new_page(javascript=True)
    audit = axe(page)
    person.sign_up(page)
    settled(page)
    change_avatar(page).set_input_files(tiny)
    expect(page.get_by_role('heading', name='Edit your avatar')).to_be_focused()
    expect(crop_step(page).get_by_text('This image is 50×40 pixels; your avatar is shown at '
                                       'up to 460×460, so it will be enlarged')).to_be_visible()
    image = crop_step(page).get_by_role('img', name='The image you chose')
    expect(image).to_have_js_property('complete', True)
    shown = image.bounding_box()
    assert min(shown['width'], shown['height']) >= 240, shown
    handle = crop_step(page).locator('.crop-handle').bounding_box()
    assert handle['width'] <= shown['width'] / 10, (handle, shown)
    expect_box(page, 5, 0, 40)  # still in the image's own pixels
    settled(page)
    audit('crop step of a small image')
    audit.assert_clean('crop step of a small image')


def canvas_middle(page):
    return page.locator('canvas').evaluate('''canvas => Array.from(
      canvas.getContext('2d').getImageData(canvas.width / 2, canvas.height / 2, 1, 1).data)''')


def test_the_round_preview_follows_the_square(new_page, person, quadrants):
    page = new_page(javascript=True)
    drawn = []
    page.on('request', lambda request: drawn.append(request.url)
            if re.search(r'/avatar/(square|result)\?', request.url) else None)
    person.sign_up(page)
    settled(page)
    change_avatar(page).set_input_files(quadrants)
    expect(page.get_by_role('heading', name='Edit your avatar')).to_be_focused()
    preview = crop_step(page).get_by_role('img', name='Your avatar with this square')
    expect(preview).to_be_visible()
    assert preview.evaluate('element => element.tagName') == 'CANVAS'
    assert preview.evaluate('element => getComputedStyle(element).borderRadius') == '50%'
    expect(crop_step(page).get_by_role('img', name='The image you chose')).to_have_js_property(
        'complete', True)
    stage, shown = (crop_step(page).locator('.crop-stage').bounding_box(),
                    preview.bounding_box())
    assert shown['x'] >= stage['x'] + stage['width']  # beside the image

    x, y, size = crop_fields(page)
    size.fill('300')
    x.fill('0')
    y.fill('0')
    page.wait_for_function('''() => {
      const canvas = document.querySelector('canvas');
      const [r, g, b] = canvas.getContext('2d').getImageData(96, 96, 1, 1).data;
      return r > 200 && g < 60 && b < 60;
    }''')
    x.fill('500')
    y.fill('300')
    page.wait_for_function('''() => {
      const canvas = document.querySelector('canvas');
      const [r, g, b] = canvas.getContext('2d').getImageData(96, 96, 1, 1).data;
      return r > 200 && g > 200 && b < 60;
    }''')
    square = crop_step(page).get_by_role('slider', name='Crop square')
    square.focus()
    page.keyboard.press('Shift+ArrowLeft')  # 60 pixels: the middle is still yellow
    assert canvas_middle(page)[:3] == pytest.approx([255, 255, 0], abs=40)
    assert drawn == [], 'with JavaScript the square and preview are drawn in the page'


def test_without_javascript_preview_draws_the_square_and_the_round_avatar(
        new_page, person, quadrants):
    page = new_page(javascript=False)
    person.sign_up(page)
    change_avatar(page).set_input_files(quadrants)
    page.get_by_role('button', name='Upload').click()
    expect(page.get_by_role('heading', name='Edit your avatar')).to_be_visible()
    for field, value in zip(crop_fields(page), ('450', '350', '200')):
        field.fill(value)
    crop_step(page).get_by_role('button', name='Preview').click()
    expect(page).to_have_url(re.compile(r'/profile/avatar/edit\?upload=.*x=450&y=350&size=200'))
    expect_box(page, 450, 350, 200)

    image = crop_step(page).get_by_role('img', name='The image you chose')
    drawn = crop_step(page).locator('img.crop-drawn')
    for each in (image, drawn):
        expect(each).to_have_js_property('complete', True)
    assert drawn.bounding_box() == pytest.approx(image.bounding_box(), abs=0.5)
    frame = image.bounding_box()
    scale = frame['width'] / WIDTH
    shot = Image.open(io.BytesIO(page.screenshot())).convert('RGB')
    inside = shot.getpixel((int(frame['x'] + 550 * scale), int(frame['y'] + 450 * scale)))
    outside = shot.getpixel((int(frame['x'] + 600 * scale), int(frame['y'] + 100 * scale)))
    assert_all(Image.new('RGB', (1, 1), inside), QUADRANTS['yellow'][1])  # the square: clear
    assert outside[1] < 140 and outside[0] < 40, outside  # green, dimmed outside the square

    result = crop_step(page).get_by_role('img', name='Your avatar with this square')
    expect(result).to_be_visible()
    expect(result).to_have_js_property('naturalWidth', 192)
    assert result.evaluate('element => getComputedStyle(element).borderRadius') == '50%'

    crop_step(page).get_by_role('button', name='Save').click()
    expect(page).to_have_url(url_ending(person.profile_path))
    assert_all(avatar_pixels(page, card_avatar(page).get_attribute('src')),
               QUADRANTS['yellow'][1])
