"""Avatars through the app: Change avatar, the crop step, Save, Cancel, Reset; refusals;
serving."""
import datetime
import io
from types import SimpleNamespace

import pytest
from PIL import Image
from werkzeug.datastructures import FileStorage

import credentials
import database
import imaging
import models
from tests.helpers import (
    HTMX,
    PHOTO,
    PROFILE,
    TOO_MANY_UPLOADS,
    UPRIGHT,
    crop_step,
    csrf_token,
    every_turn_taken,
    html,
    log_in,
    offered,
    reference_in,
    send_form,
    upload,
)
from tests.images import (
    BLUE,
    BUSY,
    GREEN,
    OUTSIDE,
    RED,
    YELLOW,
    assert_shows,
    encoded,
    hostile_file,
    near,
    quadrants,
)
from views.profile import upload_reference

BOB_PROFILE = '/user/bob/settings/profile'
PAGE_AND_HTMX = pytest.mark.parametrize('headers', [{}, HTMX], ids=['page', 'htmx'])
GONE = 'This upload is no longer available. Choose the image again.'
TOO_LARGE = 'The file is larger than 10 MB. Choose a smaller image.'


# Acting as a person would


def post(client, path, headers=None, page=PROFILE, **fields):
    fields['csrf_token'] = csrf_token(client, page)
    return client.post(page + path, data=fields, headers=headers or {})


def save(client, reference, x, y, size, headers=None, page=PROFILE):
    return post(client, '/avatar/save', headers, page, upload=reference, x=x, y=y, size=size)


def served(client, url):
    response = client.get(url)
    assert response.status_code == 200 and response.content_type == 'image/webp'
    image = Image.open(io.BytesIO(response.get_data()))
    image.load()
    return image


# Reading the database

def user_row(handle='alice'):
    with database.db.connection_context():
        return models.User.get(models.User.handle == handle)


def avatar_row(handle='alice'):
    with database.db.connection_context():
        return models.Avatar.get_or_none(models.Avatar.user == user_row(handle).id)


def uploads(handle=None):
    with database.db.connection_context():
        query = models.AvatarUpload.select()
        if handle:
            query = query.where(models.AvatarUpload.user == user_row(handle).id)
        return list(query)


def actions(action_type):
    with database.db.connection_context():
        return list(models.AuditRecord.select().where(
            models.AuditRecord.action_type == action_type))


def current_url(handle='alice', size=imaging.LARGE):
    user = user_row(handle)
    return f'/avatars/{user.id}/{user.avatar_version}/{size}.webp'


def card_images(handle='alice'):
    """What the profile card's avatar offers: the 96 px image (which the header shows too) at
    1×, the 460 px one from 2×."""
    small = current_url(handle, size=imaging.SMALL)
    return {'src': small, '1x': small, '2x': current_url(handle)}


def snapshot(handle='alice'):
    """What a change to `handle`'s avatar would show up in."""
    avatar = avatar_row(handle)
    return (user_row(handle).avatar_version, avatar and avatar.custom_large is not None,
            len(uploads(handle)))


@pytest.fixture
def bob_client(app, other_user):
    client = app.test_client()
    assert log_in(client, 'bob').status_code == 302
    return client


# The profile card

@PAGE_AND_HTMX
def test_the_avatar_is_a_change_avatar_control_with_the_limits_beside_it(client, logged_in,
                                                                         headers):
    response = client.get(PROFILE, headers=headers)
    page = html(response)
    assert (page.find('html') is None) == bool(headers)
    card = page.find('section', id='profile-card')
    label = card.find('label', attrs={'for': 'avatar-file'})
    assert label.get_text(strip=True) == 'Change avatar'
    assert offered(label.find('img', class_='avatar')) == card_images()
    field = card.find('input', id='avatar-file')
    assert field['type'] == 'file' and field['name'] == 'avatar'
    assert field['accept'] == 'image/jpeg,image/png'
    assert 'avatar-limits' in field['aria-describedby'].split()
    assert card.find(id='avatar-limits').get_text(strip=True) == imaging.LIMITS
    form = field.find_parent('form')
    assert form['method'] == 'post' and form['enctype'] == 'multipart/form-data'
    assert form.find('input', attrs={'name': 'csrf_token'})
    assert form.find('button', string='Upload')  # for a browser without JavaScript
    assert card.find('button', string='Reset') is None  # the default is showing
    assert 'HX-Request' in response.vary


def test_a_new_account_shows_its_generated_avatar(client, logged_in):
    image = served(client, current_url())
    assert image.size == (imaging.LARGE, imaging.LARGE)
    assert served(client, current_url(size=imaging.SMALL)).size == (96, 96)
    seed = avatar_row().seed
    assert client.get(current_url()).get_data() == imaging.generated(seed)[0]


# Upload → crop step → Save, without JavaScript

def test_uploading_without_javascript_leads_to_the_crop_step(client, logged_in):
    response = upload(client)
    assert response.status_code == 303
    assert response.headers['Location'].startswith(PROFILE + '/avatar/edit?upload=')
    step = html(client.get(response.headers['Location']))
    card = step.find('section', id='profile-card')
    assert card.find('h3').get_text(strip=True) == 'Edit your avatar'
    form = card.find('form', class_='crop-form')
    assert form['method'] == 'post' and form['action'] == PROFILE + '/avatar/save'
    assert form.find('input', attrs={'name': 'upload'})['value'] == reference_in(response)
    fields = {name: form.find('input', attrs={'name': name}) for name in ('x', 'y', 'size')}
    assert all(field['type'] == 'number' for field in fields.values())
    assert {name: int(field['value']) for name, field in fields.items()} == dict(
        x=200, y=0, size=800)  # the centred square of 1200×800
    for name, field in fields.items():
        assert card.find('label', attrs={'for': field['id']}), name
    assert form.find('button', string='Save')['type'] == 'submit'
    cancel = form.find('button', string='Cancel')
    assert cancel['formaction'] == PROFILE + '/avatar/cancel'
    assert step.find('html') is not None and len(uploads('alice')) == 1


def test_the_working_copy_is_shown_to_its_owner_only(client, logged_in, bob_client):
    reference, step = crop_step(client)
    image = html(step).find('img', class_='crop-image')
    preview = client.get(image['src'])
    assert preview.status_code == 200 and preview.content_type == 'image/jpeg'
    working = Image.open(io.BytesIO(preview.get_data()))
    assert working.size == (int(image['width']), int(image['height'])) == (1200, 800)
    assert_shows(working, UPRIGHT, (0, 0, 1200))
    assert bob_client.get(image['src']).status_code == 404
    assert bob_client.get(image['src'].replace(PROFILE, BOB_PROFILE)).status_code == 404
    assert bob_client.get(f'{BOB_PROFILE}/avatar/edit?upload={reference}').status_code == 404


QUADRANTS = [((100, 0, 400), RED), ((700, 400, 400), YELLOW), ((750, 20, 360), GREEN),
             ((120, 420, 360), BLUE)]


def test_saving_a_crop_shows_exactly_that_square_as_the_avatar(client, logged_in):
    for version, (box, colour) in enumerate(QUADRANTS, start=2):
        reference, _ = crop_step(client)
        old_url = current_url()
        response = save(client, reference, *box)
        assert response.status_code == 303 and response.headers['Location'] == PROFILE
        page = html(client.get(PROFILE))
        assert page.find(id='flash').get_text(strip=True) == 'Avatar saved.'
        new_url = current_url()
        assert new_url != old_url and user_row().avatar_version == version
        card = page.find('label', attrs={'for': 'avatar-file'})
        assert offered(card.find('img')) == card_images()
        large = served(client, new_url)
        assert large.size == (460, 460)
        assert_shows(large, UPRIGHT, box)
        assert near(large.getpixel((230, 230)), colour, 20), box
        assert_shows(served(client, current_url(size=96)), UPRIGHT, box)
        assert uploads() == []
        assert page.find('button', string='Reset')
    records = actions('user.avatar.update')
    assert len(records) == len(QUADRANTS)
    assert {(r.target_id, r.actor_ip) for r in records} == {(logged_in.id, '127.0.0.1')}


def test_cancel_leaves_the_avatar_and_lets_the_upload_go(client, logged_in):
    reference, _ = crop_step(client)
    before = current_url()
    response = post(client, '/avatar/cancel', upload=reference)
    assert response.status_code == 303 and response.headers['Location'] == PROFILE
    assert current_url() == before and avatar_row().custom_large is None
    assert uploads() == [] and actions('user.avatar.update') == []
    assert client.get(f'{PROFILE}/avatar/edit?upload={reference}').status_code == 404


def test_reset_goes_back_to_the_default(client, logged_in):
    reference, _ = crop_step(client)
    save(client, reference, 100, 0, 400)
    response = post(client, '/avatar/reset')
    assert response.status_code == 303 and response.headers['Location'] == PROFILE
    page = html(client.get(PROFILE))
    assert page.find(id='flash').get_text(strip=True) == 'Avatar reset to the default.'
    assert user_row().avatar_version == 3 and avatar_row().custom_large is None
    assert client.get(current_url()).get_data() == imaging.generated(avatar_row().seed)[0]
    assert page.find('button', string='Reset') is None
    [record] = actions('user.avatar.delete')
    assert record.target_id == logged_in.id


def test_reset_on_the_default_avatar_changes_nothing(client, logged_in):
    assert post(client, '/avatar/reset').status_code == 303
    assert user_row().avatar_version == 1 and actions('user.avatar.delete') == []


# The same with htmx

def test_uploading_with_htmx_answers_with_the_crop_step_in_place(client, logged_in):
    response = upload(client, headers=HTMX)
    assert response.status_code == 200 and 'HX-Request' in response.vary
    fragment = html(response)
    assert fragment.find('html') is None and fragment.find('header') is None
    card = fragment.find('section', id='profile-card')
    assert 'crop-step' in card['class']
    assert card.find('h3').get_text(strip=True) == 'Edit your avatar'
    form = card.find('form', class_='crop-form')
    assert form['hx-target'] == '#profile-card' and form['hx-swap'] == 'outerHTML'
    stage = card.find(attrs={'data-crop': True})
    assert (stage['data-width'], stage['data-height']) == ('1200', '800')
    assert client.get(card.find('img', class_='crop-image')['src']).status_code == 200
    assert len(uploads()) == 1


def test_saving_with_htmx_swaps_the_card_and_the_header_avatar(client, logged_in):
    reference = reference_in(upload(client))
    response = save(client, reference, 700, 400, 400, HTMX)
    assert response.status_code == 200
    fragment = html(response)
    new_url = current_url()
    assert fragment.find('html') is None
    card = fragment.find('section', id='profile-card')
    assert 'crop-step' not in card.get('class', [])
    assert offered(card.find('label', attrs={'for': 'avatar-file'}).find('img')) == card_images()
    assert card.find('button', string='Reset')
    header = fragment.find('header', id='topbar')
    assert header['hx-swap-oob'] == 'true'
    sources = {img['src'] for img in header.find_all('img', class_='avatar')}
    assert sources == {current_url(size=96)} and user_row().avatar_version == 2
    flash = fragment.find(id='flash')
    assert flash['hx-swap-oob'] == 'innerHTML'
    assert flash.get_text(strip=True) == 'Avatar saved.'
    assert near(served(client, new_url).getpixel((230, 230)), YELLOW, 20)


def test_reset_with_htmx_swaps_the_card_and_the_header_avatar(client, logged_in):
    save(client, reference_in(upload(client)), 100, 0, 400)
    response = post(client, '/avatar/reset', HTMX)
    assert response.status_code == 200
    fragment = html(response)
    assert fragment.find('html') is None
    card = fragment.find('section', id='profile-card')
    assert card.find('button', string='Reset') is None
    assert offered(card.find('label', attrs={'for': 'avatar-file'}).find('img')) == card_images()
    header = fragment.find('header', id='topbar')
    assert header['hx-swap-oob'] == 'true'
    assert {img['src'] for img in header.find_all('img')} == {current_url(size=96)}
    assert fragment.find(id='flash').get_text(strip=True) == 'Avatar reset to the default.'
    assert user_row().avatar_version == 3


def test_cancel_with_htmx_shows_the_card_again(client, logged_in):
    reference = reference_in(upload(client))
    response = post(client, '/avatar/cancel', HTMX, upload=reference)
    assert response.status_code == 200
    card = html(response).find('section', id='profile-card')
    assert card.find('input', id='avatar-file') and 'crop-step' not in card.get('class', [])
    assert uploads() == [] and user_row().avatar_version == 1


# Refusals

HOSTILE_UPLOADS = {
    'zero-bytes': 'The file is empty.',
    'gif-named-png': 'Only JPEG and PNG images can be used; this file is neither.',
    'svg-named-png': 'Only JPEG and PNG images can be used; this file is neither.',
    'png-pixels-garbage':
        'The file could not be read as an image; it may be damaged or incomplete.',
    'jpeg-cut-in-half':
        'The file could not be read as an image; it may be damaged or incomplete.',
    'png-claiming-100000x100000': 'The image has more than 40 megapixels. Choose a smaller image.',
    'png-decompression-bomb-20000x20000':
        'The image has more than 40 megapixels. Choose a smaller image.',
    'jpeg-over-10-mb': TOO_LARGE,
}


@PAGE_AND_HTMX
def test_a_hostile_upload_is_refused_in_the_card_and_stores_nothing(client, logged_in, headers):
    before = snapshot()
    for name, message in HOSTILE_UPLOADS.items():
        response = upload(client, hostile_file(name), headers=headers)
        assert response.status_code == 422, name
        page = html(response)
        assert (page.find('html') is None) == bool(headers)
        error = page.find('section', id='profile-card').find(id='avatar-error')
        assert error.get_text(strip=True) == message and error['role'] == 'alert', name
        field = page.find('input', id='avatar-file')
        assert field['aria-invalid'] == 'true' and 'avatar-error' in field['aria-describedby']
        assert snapshot() == before and uploads() == [], name


@pytest.mark.parametrize('data', [
    {'avatar': FileStorage(io.BytesIO(b''), '')},  # what a browser sends when none was chosen
    {},
], ids=['empty-file-field', 'no-file-field'])
def test_uploading_without_choosing_a_file_says_so(client, logged_in, data):
    data['csrf_token'] = csrf_token(client, PROFILE)
    response = send_form(client, PROFILE + '/avatar', data)
    assert response.status_code == 422
    error = html(response).find(id='avatar-error')
    assert error.get_text(strip=True) == 'Choose a JPEG or PNG file first.'
    assert uploads() == []


@PAGE_AND_HTMX
def test_a_body_over_the_upload_limit_is_413_with_a_readable_message(client, logged_in, headers):
    response = upload(client, bytes(imaging.UPLOAD_LIMIT + 64 * 1024 + 1), headers=headers)
    assert response.status_code == 413
    page = html(response)
    assert (page.find('html') is None) == bool(headers)
    error = page.find('section', id='profile-card').find(id='avatar-error')
    assert error.get_text(strip=True) == TOO_LARGE
    assert uploads() == [] and user_row().avatar_version == 1


def test_an_upload_between_1_and_10_mb_is_taken(client, logged_in):
    # random pixels do not compress: a PNG of about 2.5 MB, over the limit other forms keep
    noisy = Image.frombytes('RGB', (1000, 800), bytes(range(256)) * 9375)
    data = encoded(noisy.effect_spread(40), 'PNG')
    assert 1024 * 1024 < len(data) < imaging.UPLOAD_LIMIT
    assert upload(client, data).status_code == 303 and len(uploads()) == 1


def test_other_forms_keep_the_1_mb_body_limit(client, logged_in):
    token = csrf_token(client, PROFILE)
    response = client.post(PROFILE, data={'display_name': 'x' * (2 * 1024 * 1024),
                                          'csrf_token': token})
    assert response.status_code == 413
    assert html(response).find(id='avatar-error') is None  # it was not a file
    assert user_row().display_name is None


def test_an_upload_without_the_csrf_token_is_refused(client, logged_in):
    response = send_form(client, PROFILE + '/avatar', {
        'avatar': FileStorage(io.BytesIO(PHOTO), 'photo.jpg')})
    assert response.status_code == 400 and uploads() == []


def test_someone_else_cannot_touch_your_avatar_page(client, logged_in, other_user):
    response = send_form(client, BOB_PROFILE + '/avatar', {
        'avatar': FileStorage(io.BytesIO(PHOTO), 'photo.jpg'),
        'csrf_token': csrf_token(client, PROFILE)})
    assert response.status_code == 404 and uploads() == []


@PAGE_AND_HTMX
def test_another_users_upload_reference_is_refused(client, logged_in, bob_client, headers):
    bobs_reference, _ = crop_step(bob_client, BOB_PROFILE)
    alice_before, bob_before = snapshot('alice'), snapshot('bob')
    response = save(client, bobs_reference, 200, 0, 800, headers)
    if headers:
        assert response.status_code == 422
        assert html(response).find(id='avatar-error').get_text(strip=True) == GONE
    else:
        assert response.status_code == 404
        assert GONE in html(response).find('main').get_text()
    assert post(client, '/avatar/cancel', upload=bobs_reference).status_code == 303
    assert client.get(f'{PROFILE}/avatar/edit?upload={bobs_reference}').status_code == 404
    assert client.get(f'{PROFILE}/avatar/preview?upload={bobs_reference}').status_code == 404
    assert snapshot('alice') == alice_before and snapshot('bob') == bob_before
    assert len(uploads('bob')) == 1
    assert save(bob_client, bobs_reference, 200, 0, 800, page=BOB_PROFILE).status_code == 303


def test_a_reference_naming_alice_with_bobs_upload_finds_nothing(client, logged_in, bob_client):
    """Should a reference be signed for Alice with the id of Bob's upload (a leaked key), the
    upload is still looked up among Alice's own."""
    crop_step(bob_client, BOB_PROFILE)
    [bobs_upload] = uploads('bob')
    with client.application.test_request_context():
        forged = upload_reference(SimpleNamespace(user_id=logged_in.id, id=bobs_upload.id))
    assert save(client, forged, 200, 0, 800).status_code == 404
    assert len(uploads('bob')) == 1 and user_row('bob').avatar_version == 1


@PAGE_AND_HTMX
def test_a_tampered_reference_is_refused(client, logged_in, headers):
    reference, _ = crop_step(client)
    tampered = reference[:-3] + ('AAA' if reference[-3:] != 'AAA' else 'BBB')
    response = save(client, tampered, 200, 0, 800, headers)
    assert response.status_code == (422 if headers else 404)
    assert snapshot() == (1, False, 1)
    assert save(client, '', 200, 0, 800, headers).status_code == (422 if headers else 404)


@PAGE_AND_HTMX
def test_an_expired_upload_is_refused(client, logged_in, headers):
    reference, _ = crop_step(client)
    with database.db.connection_context():
        models.AvatarUpload.update(
            expires_at=models.utcnow() - datetime.timedelta(seconds=1)).execute()
    response = save(client, reference, 200, 0, 800, headers)
    assert response.status_code == (422 if headers else 404)
    if headers:
        assert html(response).find(id='avatar-error').get_text(strip=True) == GONE
    assert client.get(f'{PROFILE}/avatar/edit?upload={reference}').status_code == 404
    assert user_row().avatar_version == 1 and avatar_row().custom_large is None


def test_an_expired_upload_is_cleared_by_the_next_upload_of_anyone(client, logged_in,
                                                                   bob_client):
    crop_step(bob_client, BOB_PROFILE)
    with database.db.connection_context():
        models.AvatarUpload.update(
            expires_at=models.utcnow() - datetime.timedelta(seconds=1)).execute()
    crop_step(client)
    assert uploads('bob') == [] and len(uploads('alice')) == 1


OUTSIDE_BOXES = [(-1, 0, 400), (0, -1, 400), (900, 0, 400), (0, 500, 400), (0, 0, 0),
                 (0, 0, 801), (1200, 800, 1)]


@PAGE_AND_HTMX
def test_a_crop_square_outside_the_image_is_refused_and_stores_nothing(client, logged_in,
                                                                       headers):
    reference, _ = crop_step(client)
    for box in OUTSIDE_BOXES:
        response = save(client, reference, *box, headers=headers)
        assert response.status_code == 422, box
        card = html(response).find('section', id='profile-card')
        assert card.find(id='avatar-error').get_text(strip=True) == OUTSIDE.format(1200, 800)
        form = card.find('form', class_='crop-form')
        assert [form.find('input', attrs={'name': name})['value'] for name in ('x', 'y', 'size')
                ] == [str(value) for value in box]  # what was typed stays, to be corrected
        assert snapshot() == (1, False, 1)  # the upload waits for a better square


def test_a_crop_square_that_is_not_whole_numbers_is_refused(client, logged_in):
    reference, _ = crop_step(client)
    for fields in [dict(x='a', y='0', size='400'), dict(x='1.5', y='0', size='4'),
                   dict(x='', y='', size='')]:
        response = save(client, reference, **fields)
        assert response.status_code == 422, fields
        assert html(response).find(id='avatar-error').get_text(strip=True) == (
            'Enter whole numbers of pixels for x, y and size.')
        assert snapshot() == (1, False, 1)


# Bounded work: turns to decode, and uploads per user


def error_in_card(response):
    return html(response).find('section', id='profile-card').find(id='avatar-error')


@PAGE_AND_HTMX
def test_an_upload_while_every_turn_is_taken_is_503_in_the_card_and_kept_nowhere(
        client, logged_in, headers, monkeypatch):
    with every_turn_taken(monkeypatch):
        response = upload(client, headers=headers)
    # At least the busy answer's 5 seconds; Flask-Limiter raises it to when the upload count
    # starts again, as it does on every answer of a limited route.
    assert response.status_code == 503 and int(response.headers['Retry-After']) >= 5
    assert (html(response).find('html') is None) == bool(headers)
    error = error_in_card(response)
    assert error.get_text(strip=True) == BUSY and error['role'] == 'alert'
    assert snapshot() == (1, False, 0)
    assert upload(client, headers=headers).status_code == (200 if headers else 303)


@PAGE_AND_HTMX
def test_saving_while_every_turn_is_taken_is_503_and_the_crop_step_stays(
        client, logged_in, headers, monkeypatch):
    reference, _ = crop_step(client)
    with every_turn_taken(monkeypatch):
        response = save(client, reference, 100, 0, 600, headers)
    assert response.status_code == 503 and response.headers['Retry-After'] == '5'
    card = html(response).find('section', id='profile-card')
    assert card.find('h3').get_text(strip=True) == 'Edit your avatar'
    assert card.find(id='avatar-error').get_text(strip=True) == BUSY
    assert card.find('input', attrs={'name': 'size'})['value'] == '600'
    assert snapshot() == (1, False, 1)  # the upload waits to be saved again
    assert save(client, reference, 100, 0, 600, headers).status_code == (200 if headers else 303)
    assert snapshot() == (2, True, 0)


@PAGE_AND_HTMX
def test_the_eleventh_upload_in_a_minute_is_429_in_the_card(client, logged_in, headers):
    for _ in range(10):  # refused images count too: each was work to look at
        assert upload(client, hostile_file('zero-bytes'), headers=headers).status_code == 422
    response = upload(client, headers=headers)
    assert response.status_code == 429 and int(response.headers['Retry-After']) > 0
    assert (html(response).find('html') is None) == bool(headers)
    error = error_in_card(response)
    assert error.get_text(strip=True) == TOO_MANY_UPLOADS and error['role'] == 'alert'
    assert snapshot() == (1, False, 0)


def test_the_upload_limit_is_per_user_and_counts_the_api_too(app, client, logged_in,
                                                             bob_client):
    with database.db.connection_context():
        secret = credentials.Token.issue(user_row())[1]
    for _ in range(5):
        assert upload(client, hostile_file('zero-bytes')).status_code == 422
        response = send_form(app.test_client(), '/api/v0/user/alice/avatar', {
            'avatar': FileStorage(io.BytesIO(b''), 'empty.png')},
            {'Authorization': f'Bearer {secret}'})
        assert response.status_code == 400
    assert upload(client).status_code == 429
    assert upload(bob_client, page=BOB_PROFILE).status_code == 303  # bob has his own count


def test_a_new_upload_replaces_the_pending_one(client, logged_in):
    first, _ = crop_step(client)
    second = reference_in(upload(client, encoded(quadrants(300, 200), 'PNG')))
    assert len(uploads()) == 1
    assert save(client, first, 200, 0, 800).status_code == 404
    assert save(client, second, 0, 0, 100).status_code == 303
    assert near(served(client, current_url()).getpixel((230, 230)), RED, 20)


# Serving

def test_an_avatar_is_served_immutable_with_an_etag(client, logged_in):
    url = current_url()
    response = client.get(url)
    assert response.status_code == 200 and response.content_type == 'image/webp'
    assert set(response.headers['Cache-Control'].split(', ')) == {
        'public', 'max-age=31536000', 'immutable'}
    etag = response.headers['ETag']
    again = client.get(url, headers={'If-None-Match': etag})
    assert again.status_code == 304 and again.get_data() == b''
    assert client.get(url, headers={'If-None-Match': '"other"'}).status_code == 200


def test_avatars_are_public_images(app, user):
    client = app.test_client()  # nobody logged in: an avatar shows wherever the user does
    assert served(client, current_url()).size == (460, 460)


def test_an_old_avatar_url_redirects_to_the_current_one(client, logged_in):
    old, old_small = current_url(), current_url(size=96)
    save(client, crop_step(client)[0], 100, 0, 400)
    for url, size in ((old, 460), (old_small, 96)):
        response = client.get(url)
        assert response.status_code == 302
        assert response.headers['Location'] == current_url(size=size)
        assert 'immutable' not in response.headers['Cache-Control']
    response = client.get(old, follow_redirects=True)
    assert near(Image.open(io.BytesIO(response.get_data())).getpixel((230, 230)), RED, 20)


def test_unknown_users_and_other_sizes_are_not_found(client, logged_in):
    user = user_row()
    assert client.get('/avatars/u_doesnotexist0000000/1/460.webp').status_code == 404
    for size in (0, 32, 95, 97, 459, 461, 4600):
        assert client.get(f'/avatars/{user.id}/1/{size}.webp').status_code == 404, size
    assert client.get(f'/avatars/{user.id}/1/460.png').status_code == 404


def test_the_api_user_object_has_the_new_avatar_url_after_an_upload(client, logged_in):
    with database.db.connection_context():
        _, secret = credentials.Token.issue(user_row())
    api = {'Authorization': f'Bearer {secret}'}
    before = client.get('/api/v0/actor', headers=api).get_json()['avatar_url']
    assert before == 'http://localhost' + current_url()
    save(client, crop_step(client)[0], 100, 0, 400)
    after = client.get('/api/v0/actor', headers=api).get_json()['avatar_url']
    assert after == 'http://localhost' + current_url() and after != before


def test_an_account_from_before_avatars_gets_one_when_first_shown(client, logged_in):
    with database.db.connection_context():
        models.Avatar.delete().execute()
    assert avatar_row() is None
    page = html(client.get(PROFILE))
    assert offered(page.find('label', attrs={'for': 'avatar-file'}).find('img')) == card_images()
    image = served(client, current_url())
    assert image.size == (460, 460)
    assert client.get(current_url()).get_data() == imaging.generated(avatar_row().seed)[0]


def test_an_account_from_before_avatars_can_upload_one(client, logged_in):
    with database.db.connection_context():
        models.Avatar.delete().execute()
    save(client, crop_step(client)[0], 100, 0, 400)
    assert avatar_row().custom_large is not None and user_row().avatar_version == 2


# Going with the user

def test_avatar_rows_go_with_the_user(client, logged_in, bob_client):
    save(client, crop_step(client)[0], 100, 0, 400)
    crop_step(client)
    crop_step(bob_client, BOB_PROFILE)

    def counts():
        with database.db.connection_context():
            return (models.Avatar.select().count(), models.AvatarUpload.select().count())
    assert counts() == (2, 2)
    with database.db.connection_context():
        models.User.get(models.User.handle == 'alice').delete_instance()
    assert counts() == (1, 1)
    assert uploads('bob') and avatar_row('bob')


# Issue 16: the crop step shows small images large enough, warns about them, and without
# JavaScript draws the square and the avatar it makes from the numbers

TINY = quadrants(50, 40)


def drawn(client, url, content_type):
    response = client.get(url)
    assert response.status_code == 200 and response.content_type == content_type
    assert response.headers['Cache-Control'] == 'private, max-age=3600'
    image = Image.open(io.BytesIO(response.get_data()))
    image.load()
    return image


@PAGE_AND_HTMX
def test_a_small_image_is_shown_enlarged_with_a_warning_that_it_will_look_blurry(
        client, logged_in, headers):
    response = upload(client, encoded(TINY, 'PNG'), headers=headers)
    if not headers:
        response = client.get(response.headers['Location'])
    card = html(response).find('section', id='profile-card')
    assert card.find(id='crop-warning').get_text(strip=True) == (
        'This image is 50×40 pixels; your avatar is shown at up to 460×460, so it will be '
        'enlarged and may look blurry. A larger image gives a sharper avatar.')
    assert 'js-only' not in card.find(id='crop-warning').get('class', [])
    image = card.find('img', class_='crop-image')
    assert (image['width'], image['height']) == ('300', '240')  # each pixel a 6×6 block
    working = drawn(client, image['src'], 'image/jpeg')
    assert working.size == (300, 240)
    for x, y in ((5, 5), (40, 5), (5, 35), (40, 35), (20, 15)):  # each 6×6 block, one colour
        assert near(working.getpixel((6 * x + 3, 6 * y + 3)), TINY.getpixel((x, y)), 24)
    stage = card.find(attrs={'data-crop': True})
    assert (stage['data-width'], stage['data-height']) == ('50', '40')
    assert card.find('legend').get_text(strip=True).endswith('(50 × 40)')


@pytest.mark.parametrize('size, warned', [((459, 900), True), ((460, 460), False),
                                          ((1200, 800), False), ((50, 40), True)])
def test_only_an_image_smaller_than_the_avatar_is_warned_about(size, warned):
    warning = imaging.upscale_warning(*size)
    assert (warning is not None) == warned
    if warned:
        assert warning.startswith(f'This image is {size[0]}×{size[1]} pixels; ')


def test_a_large_image_is_neither_enlarged_nor_warned_about(client, logged_in):
    _, step = crop_step(client)
    card = html(step).find('section', id='profile-card')
    assert card.find(id='crop-warning') is None
    image = card.find('img', class_='crop-image')
    assert (image['width'], image['height']) == ('1200', '800')


def drawings(card):
    """The square drawn on the image and the round avatar, as the page shows them without
    JavaScript (each hidden with it)."""
    square = card.find('img', class_='crop-drawn')
    result = card.find('img', class_='crop-result-image')
    for image in filter(None, (square, result)):
        assert 'nojs-only' in image['class'] and image['loading'] == 'lazy'
    return square, result


def assert_square(client, card, box, working=(1200, 800), scale=1):
    """The square drawn over the working copy is clear inside `box`, dimmed outside it."""
    square, _ = drawings(card)
    overlay = drawn(client, square['src'], 'image/png').convert('LA')
    assert overlay.size == working
    assert (square['width'], square['height']) == tuple(map(str, working))
    x, y, size = (value * scale for value in box)
    middle = (x + size // 2, y + size // 2)
    assert overlay.getpixel(middle)[1] == 0  # clear: the image shows as it is
    for outside in ((x - 12, middle[1]), (middle[0], y + size + 12)):
        if 0 <= outside[0] < working[0] and 0 <= outside[1] < working[1]:
            assert overlay.getpixel(outside) == (0, 140), outside  # dimmed
    assert overlay.getpixel((x + 1, y + size // 8)) == (255, 255)  # the white outline


def test_without_javascript_the_crop_step_draws_the_centred_square_and_its_avatar(
        client, logged_in):
    _, step = crop_step(client)
    card = html(step).find('section', id='profile-card')
    assert_square(client, card, (200, 0, 800))
    _, result = drawings(card)
    assert result['alt'] == 'Your avatar with this square'
    assert (result['width'], result['height']) == ('96', '96')
    round_avatar = drawn(client, result['src'], 'image/jpeg')
    assert round_avatar.size == (192, 192)
    assert_shows(round_avatar, UPRIGHT, (200, 0, 800))
    canvas = card.find('canvas', class_='crop-result-image')
    assert 'js-only' in canvas['class'] and canvas['aria-label'] == result['alt']


@PAGE_AND_HTMX
def test_preview_shows_the_square_and_avatar_of_the_numbers_and_saves_nothing(
        client, logged_in, headers):
    reference, step = crop_step(client)
    preview = html(step).find('form', class_='crop-form').find('button', string='Preview')
    assert preview['formaction'] == PROFILE + '/avatar/edit' and 'nojs-only' in preview['class']
    before = snapshot()
    response = post(client, '/avatar/edit', headers, upload=reference, x=700, y=400, size=400)
    if headers:
        assert response.status_code == 200
    else:
        assert response.status_code == 303
        assert response.headers['Location'].startswith(PROFILE + '/avatar/edit?upload=')
        response = client.get(response.headers['Location'])
        assert response.status_code == 200
    card = html(response).find('section', id='profile-card')
    assert card.find('h3').get_text(strip=True) == 'Edit your avatar'
    form = card.find('form', class_='crop-form')
    assert {name: form.find('input', attrs={'name': name})['value']
            for name in ('x', 'y', 'size')} == {'x': '700', 'y': '400', 'size': '400'}
    assert form.find('input', attrs={'name': 'upload'})['value'] == reference
    assert_square(client, card, (700, 400, 400))
    round_avatar = drawn(client, drawings(card)[1]['src'], 'image/jpeg')
    assert near(round_avatar.getpixel((96, 96)), YELLOW, 20)
    assert card.find(id='avatar-error') is None
    assert snapshot() == before and actions('user.avatar.update') == []


def test_preview_of_a_small_image_draws_on_its_enlarged_copy(client, logged_in):
    reference = reference_in(upload(client, encoded(TINY, 'PNG')))
    response = post(client, '/avatar/edit', upload=reference, x=10, y=5, size=20)
    card = html(client.get(response.headers['Location'])).find('section', id='profile-card')
    assert_square(client, card, (10, 5, 20), working=(300, 240), scale=6)


@PAGE_AND_HTMX
@pytest.mark.parametrize('numbers, message', [
    (dict(x=900, y=0, size=400), OUTSIDE.format(1200, 800)),
    (dict(x='1.5', y=0, size=400), models.CROP_NOT_WHOLE),
    (dict(x='', y='', size=''), models.CROP_NOT_WHOLE),
])
def test_preview_of_numbers_that_do_not_fit_says_why_and_draws_nothing(
        client, logged_in, headers, numbers, message):
    reference, _ = crop_step(client)
    before = snapshot()
    response = post(client, '/avatar/edit', headers, upload=reference, **numbers)
    assert response.status_code == 422
    card = html(response).find('section', id='profile-card')
    assert card.find(id='avatar-error').get_text(strip=True) == message
    assert card.find('img', class_='crop-drawn') is None
    assert card.find('img', class_='crop-result-image') is None
    assert card.find('input', attrs={'name': 'x'})['value'] == str(numbers['x'])
    assert snapshot() == before


def test_the_crop_step_url_with_numbers_that_do_not_fit_says_why(client, logged_in):
    reference, _ = crop_step(client)
    response = client.get(f'{PROFILE}/avatar/edit?upload={reference}&x=0&y=0&size=801')
    assert response.status_code == 422
    card = html(response).find('section', id='profile-card')
    assert card.find(id='avatar-error').get_text(strip=True) == OUTSIDE.format(1200, 800)
    assert card.find('img', class_='crop-drawn') is None


def test_preview_of_an_upload_that_is_gone_says_so(client, logged_in):
    reference, _ = crop_step(client)
    post(client, '/avatar/cancel', upload=reference)
    response = post(client, '/avatar/edit', upload=reference, x=0, y=0, size=100)
    assert response.status_code == 404
    response = post(client, '/avatar/edit', HTMX, upload=reference, x=0, y=0, size=100)
    assert response.status_code == 422
    assert html(response).find(id='avatar-error').get_text(strip=True) == GONE


@pytest.mark.parametrize('kind', ['square', 'result'])
def test_the_drawn_square_and_avatar_are_their_owners_only_and_need_numbers_inside(
        client, logged_in, bob_client, kind):
    reference, _ = crop_step(client)
    url = f'{PROFILE}/avatar/{kind}?upload={reference}'
    assert client.get(url + '&x=0&y=0&size=800').status_code == 200
    for query in ('', '&x=0&y=0', '&x=0&y=0&size=801', '&x=-1&y=0&size=10',
                  '&x=a&y=0&size=10', '&x=0&y=0&size=0'):
        assert client.get(url + query).status_code == 404, query
    assert bob_client.get(url + '&x=0&y=0&size=800').status_code == 404
    assert client.get(f'{PROFILE}/avatar/{kind}?upload=x&x=0&y=0&size=8').status_code == 404


def test_the_avatar_and_its_controls_share_one_column_beside_the_facts(client, logged_in):
    for custom in (False, True):
        if custom:
            reference, _ = crop_step(client)
            save(client, reference, 100, 0, 400)
        card = html(client.get(PROFILE)).find('section', id='profile-card')
        column = card.find(class_='avatar-column')
        assert column.find('input', id='avatar-file')
        assert bool(column.find('button', string='Reset')) == custom
        assert column.find('dl') is None and card.find('dl', class_='facts').parent is card
        status = column.find(class_='upload-status')
        assert status.has_attr('hidden')
        bar = status.find('progress')
        assert bar['aria-label'] == 'Upload progress' and bar['max'] == '100'
