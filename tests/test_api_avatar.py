"""The avatar through the API: POST and DELETE /api/v0/user/{handle}/avatar.

Every answer is checked against the OpenAPI document (and the error object against the
Steampipe Cloud reference) by tests.test_api's Api client."""
import io

import pytest
from PIL import Image
from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart

import database
import imaging
import models
from tests.helpers import IP, TOO_MANY_UPLOADS, audit, errors_at, every_turn_taken
from tests.images import BUSY

URL = '/api/v0/user/alice/avatar'
BLACK, RED, GREEN = (0, 0, 0), (220, 40, 40), (40, 170, 60)
BLUE, YELLOW = (40, 70, 220), (240, 200, 40)
NEITHER = 'Only JPEG and PNG images can be used; this file is neither.'
OUTSIDE = ('The crop square must lie inside the image (400×200 pixels): x and y at least 0, '
           'x + size at most the width, y + size at most the height.')
TOO_LARGE = 'The file is larger than 10 MB. Choose a smaller image.'


def encoded(image, format):
    buffer = io.BytesIO()
    image.save(buffer, format)
    return buffer.getvalue()


def picture():
    """400×200: black at the sides; the middle square in quarters, red, green / blue, yellow."""
    image = Image.new('RGB', (400, 200), BLACK)
    for (x, y), colour in zip([(100, 0), (200, 0), (100, 100), (200, 100)],
                              [RED, GREEN, BLUE, YELLOW]):
        image.paste(colour, (x, y, x + 100, y + 100))
    return encoded(image, 'PNG')


PICTURE = picture()


def send(api, fields, url=URL, secret=None):
    """POST `fields` as multipart/form-data, the body made in memory: the test client would
    spool a large one to a temporary file that nothing closes."""
    boundary, body = encode_multipart(fields)
    return api('POST', url, data=body, secret=secret,
               content_type=f'multipart/form-data; boundary={boundary}')


def image_field(data=PICTURE, filename='me.png'):
    return FileStorage(io.BytesIO(data), filename, content_type='image/png')


def upload(api, data=PICTURE, url=URL, secret=None, **crop):
    return send(api, {'avatar': image_field(data), **{k: str(v) for k, v in crop.items()}},
                url, secret)


def shown(api, avatar_url):
    """The image an avatar URL serves."""
    response = api.client.get(avatar_url)
    assert response.status_code == 200 and response.mimetype == 'image/webp'
    image = Image.open(io.BytesIO(response.get_data()))
    image.load()
    assert (image.format, image.size) == ('WEBP', (imaging.LARGE, imaging.LARGE))
    return image.convert('RGB')


def quarters(image):
    """The colour in the middle of each quarter of `image`, and that it is the same near the
    quarter's outer corner: top left, top right, bottom left, bottom right."""
    side = image.width
    colours = []
    for top in (0, side // 2):
        for left in (0, side // 2):
            middle = image.getpixel((left + side // 4, top + side // 4))
            corner = image.getpixel((left + (12 if left == 0 else side // 2 - 12),
                                     top + (12 if top == 0 else side // 2 - 12)))
            assert near(corner, middle), (corner, middle)
            colours.append(middle)
    return colours


def near(actual, expected, tolerance=16):
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected))


def assert_quarters(image, expected):
    assert all(near(a, e) for a, e in zip(quarters(image), expected)), (quarters(image), expected)


def state(handle='alice'):
    """What an avatar change would change: the URL's version, the custom image, the audit."""
    with database.db.connection_context():
        user = models.User.get(models.User.handle == handle)
        avatar = models.Avatar.get_or_none(models.Avatar.user == user.id)
        return (user.avatar_version, avatar is not None and avatar.custom_large is not None,
                [r.action_type for r in audit() if r.action_type.startswith('user.avatar')])


def actor_avatar_url(api):
    return api('GET', '/api/v0/actor').get_json()['avatar_url']


# Upload

def test_an_upload_without_a_crop_shows_the_centred_square(api):
    before = actor_avatar_url(api)
    response = upload(api)
    assert response.status_code == 200
    avatar_url = response.get_json()['avatar_url']
    assert avatar_url == actor_avatar_url(api) != before
    assert avatar_url.startswith('http://localhost/avatars/')
    assert_quarters(shown(api, avatar_url), [RED, GREEN, BLUE, YELLOW])  # no black side


def test_an_upload_with_a_crop_shows_that_square(api, alice):
    response = upload(api, x=250, y=50, size=100)
    assert response.status_code == 200
    assert response.get_json()['avatar_url'] == actor_avatar_url(api)
    assert_quarters(shown(api, response.get_json()['avatar_url']),
                    [GREEN, BLACK, YELLOW, BLACK])
    assert state() == (2, True, ['user.avatar.update'])
    record = audit('user.avatar.update')[0]
    assert (record.actor_id, record.actor_ip, record.target_id) == (alice.id, IP, alice.id)


def test_an_upload_larger_than_the_apps_1_mb_body_limit_is_taken(api):
    photo = encoded(Image.new('RGB', (300, 300), GREEN), 'JPEG')
    padded = photo + bytes(2 * 1024 * 1024)  # decoders ignore what follows the image
    response = upload(api, padded)
    assert response.status_code == 200
    assert_quarters(shown(api, response.get_json()['avatar_url']), [GREEN] * 4)


# Refusals: each a 400 (or 413) that says where and why, and nothing stored

NOTHING_STORED = (1, False, [])


@pytest.mark.parametrize('data', [
    encoded(Image.new('RGB', (40, 40), RED), 'GIF'),
    b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
], ids=['gif', 'svg'])
def test_a_file_that_is_not_jpeg_or_png_is_a_400_at_the_avatar_field(api, data):
    response = upload(api, data)
    assert response.status_code == 400
    assert response.get_json()['validation_errors'] == [
        {'location': 'body.avatar', 'message': NEITHER}]
    assert state() == NOTHING_STORED


@pytest.mark.parametrize('fields', [
    {},
    {'x': '0', 'y': '0', 'size': '100'},
    {'avatar': 'not a file, a text field'},
    {'picture': image_field()},
], ids=['empty-form', 'crop-alone', 'text-field', 'other-name'])
def test_an_upload_without_the_avatar_file_is_a_400(api, fields):
    response = send(api, fields)
    assert response.status_code == 400 and errors_at(response) == ['body.avatar']
    assert state() == NOTHING_STORED


def test_a_json_body_is_a_400_at_the_avatar_field(api):
    response = api('POST', URL, {'avatar': 'aGVsbG8='})
    assert response.status_code == 400 and errors_at(response) == ['body.avatar']


@pytest.mark.parametrize('crop, locations', [
    ({'x': '10'}, ['body.y', 'body.size']),
    ({'x': '10', 'y': '10'}, ['body.size']),
    ({'x': 'ten', 'y': '1.5', 'size': '1e2'}, ['body.x', 'body.y', 'body.size']),
    ({'x': '0', 'y': '0', 'size': '9' * 5000}, ['body.size']),
    ({'x': '0', 'y': '0', 'size': '²'}, ['body.size']),
], ids=['x-alone', 'no-size', 'not-whole-numbers', 'thousands-of-digits', 'superscript'])
def test_a_partial_or_non_numeric_crop_is_a_400_at_each_field(api, crop, locations):
    response = upload(api, **crop)
    assert response.status_code == 400 and errors_at(response) == locations
    assert state() == NOTHING_STORED


@pytest.mark.parametrize('crop', [
    {'x': 300, 'y': 0, 'size': 200},
    {'x': -1, 'y': 0, 'size': 100},
    {'x': 0, 'y': 0, 'size': 0},
    {'x': 0, 'y': 150, 'size': 100},
], ids=['past-the-right', 'left-of-the-image', 'empty-square', 'below-the-image'])
def test_a_crop_square_outside_the_image_is_a_400_that_says_so(api, crop):
    response = upload(api, **crop)
    assert response.status_code == 400
    assert response.get_json()['validation_errors'] == [
        {'location': 'body.avatar', 'message': OUTSIDE}]
    assert state() == NOTHING_STORED


def test_a_body_over_the_upload_limit_is_a_413_error_object(api):
    too_large = bytes(imaging.UPLOAD_LIMIT + 64 * 1024 + 1)
    response = send(api, {'avatar': image_field(b'\x89PNG\r\n\x1a\n' + too_large)})
    assert response.status_code == 413
    body = response.get_json()
    assert (body['title'], body['detail']) == ('Content Too Large', TOO_LARGE)
    assert state() == NOTHING_STORED


def test_another_users_handle_is_404_and_their_avatar_stays(api, other_user):
    for url in ('/api/v0/user/bob/avatar', '/api/v0/user/nobody/avatar'):
        assert upload(api, url=url).status_code == 404
        assert api('DELETE', url).status_code == 404
    assert state('bob') == NOTHING_STORED and state() == NOTHING_STORED


def test_no_token_is_401_for_both(api):
    assert upload(api, secret='').status_code == 401
    assert api('DELETE', URL, secret='').status_code == 401
    assert state() == NOTHING_STORED


# Bounded work: turns to decode, and uploads per user

def test_an_upload_while_every_turn_is_taken_is_a_503_with_retry_after(api, monkeypatch):
    with every_turn_taken(monkeypatch):
        response = upload(api)
    assert response.status_code == 503 and int(response.headers['Retry-After']) >= 5
    body = response.get_json()
    assert (body['title'], body['detail']) == ('Service Unavailable', BUSY)
    assert state() == NOTHING_STORED
    assert upload(api).status_code == 200


def test_the_eleventh_upload_in_a_minute_is_a_429_error_object(api):
    for _ in range(10):  # refused ones count too
        assert upload(api, b'not an image').status_code == 400
    response = upload(api)
    assert response.status_code == 429 and int(response.headers['Retry-After']) > 0
    body = response.get_json()
    assert (body['title'], body['detail']) == ('Too Many Requests', TOO_MANY_UPLOADS)
    assert state() == NOTHING_STORED
    assert api('DELETE', URL).status_code == 200  # only uploads are counted


# Reset

def test_delete_goes_back_to_the_default_avatar(api, alice):
    with database.db.connection_context():
        avatar = models.Avatar.for_user(alice.id)
    uploaded_url = upload(api, x=250, y=50, size=100).get_json()['avatar_url']
    response = api('DELETE', URL)
    assert response.status_code == 200
    avatar_url = response.get_json()['avatar_url']
    assert avatar_url == actor_avatar_url(api) != uploaded_url
    assert api.client.get(avatar_url).get_data() == imaging.generated(avatar.seed)[0]
    assert state() == (3, False, ['user.avatar.update', 'user.avatar.delete'])
    assert audit('user.avatar.delete')[0].actor_ip == IP


def test_delete_on_the_default_avatar_changes_nothing(api):
    before = actor_avatar_url(api)
    response = api('DELETE', URL)
    assert response.status_code == 200
    assert response.get_json()['avatar_url'] == before == actor_avatar_url(api)
    assert state() == NOTHING_STORED
