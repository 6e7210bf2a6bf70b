"""A generated corpus of hostile and odd image files sent through the real upload endpoints
(the API's POST avatar, and the Profile page's upload and Save): each is refused with a message
and leaves nothing stored, or is normalised into WebP avatars of the right size.

The refused part reuses tests/test_imaging.py's corpus (bombs, truncations, wrong types,
extreme sizes), which there is checked against the pipeline alone; here it is checked at the
endpoints, with what the database holds afterwards."""
import io

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart

import credentials
import database
import imaging
import models
from tests.helpers import csrf_token, html
from tests.images import (
    HOSTILE,
    MODES,
    encoded,
    hostile,
    hostile_file,
    noise,
    oriented_jpeg,
    quadrants,
)

pytestmark = pytest.mark.slow  # hundreds of image files through the upload endpoints

SETTINGS = '/user/alice/settings/profile'
ZIP = (b'PK\x03\x04\x14\x00\x00\x00\x00\x00' + bytes(16) + b'\x08\x00\x00\x00evil.txt'
       + b'PK\x05\x06' + bytes(18))
HTML = b'<!doctype html><html><body><script>alert(document.cookie)</script></body></html>'


def png_with_text_chunk(text):
    info = PngInfo()
    info.add_text('Comment', text)
    return encoded(noise(), 'PNG', pnginfo=info)


def grey_16_bit_tall():
    return encoded(Image.new('I;16', (40, 4000), 30000), 'PNG')


# name: how to make a file that is taken, made an upright square and stored as WebP
NORMALISED = {
    **{name: make for name, (make, _) in MODES.items()},
    'jpeg-then-zip': lambda: encoded(noise(), 'JPEG') + ZIP,
    'png-then-zip': lambda: encoded(noise(), 'PNG') + ZIP,
    'png-then-html': lambda: encoded(noise(), 'PNG') + HTML,
    'jpeg-then-html': lambda: encoded(noise(), 'JPEG') + HTML,
    'png-with-html-in-a-text-chunk': lambda: png_with_text_chunk(HTML.decode()),
    'jpeg-with-html-in-its-comment': lambda: encoded(noise(), 'JPEG', comment=HTML),
    'progressive-jpeg': lambda: encoded(noise(), 'JPEG', progressive=True),
    'palette-png': lambda: encoded(noise().convert('P'), 'PNG'),
    'cmyk-jpeg-of-noise': lambda: encoded(noise().convert('CMYK'), 'JPEG'),
    'exif-rotated-90': lambda: oriented_jpeg(quadrants(300, 200), 6),
    'exif-rotated-270': lambda: oriented_jpeg(quadrants(300, 200), 8),
    'exif-mirrored-and-rotated': lambda: oriented_jpeg(quadrants(300, 200), 7),
    'one-pixel-png': lambda: encoded(Image.new('RGB', (1, 1), (9, 99, 199)), 'PNG'),
    'one-by-4000-png': lambda: encoded(Image.new('RGB', (1, 4000), (9, 99, 199)), 'PNG'),
    '4000-by-1-jpeg': lambda: encoded(Image.new('RGB', (4000, 1), (9, 99, 199)), 'JPEG'),
    'grey-16-bit-40-by-4000-png': grey_16_bit_tall,
}


def test_the_corpus_has_at_least_30_files():
    assert len(HOSTILE) + len(NORMALISED) >= 30


@pytest.fixture
def bearer(app, alice):
    with database.db.connection_context():
        return {'Authorization': 'Bearer ' + credentials.Token.issue(alice)[1]}


def send_file(client, url, data, headers=None, **fields):
    """POST `data` as the multipart field "avatar", the body made in memory: the test client
    would spool a large one to a temporary file that nothing closes."""
    boundary, body = encode_multipart(
        {'avatar': FileStorage(io.BytesIO(data), 'me.png', content_type='image/png'), **fields})
    return client.post(url, data=body, headers=headers,
                       content_type=f'multipart/form-data; boundary={boundary}')


def api_upload(client, bearer, data):
    return send_file(client, '/api/v0/user/alice/avatar', data, bearer)


def stored():
    """What the database holds of alice's avatar, and her pending uploads."""
    with database.db.connection_context():
        user = models.User.get(models.User.handle == 'alice')
        avatar = models.Avatar.get_or_none(models.Avatar.user == user)
        return dict(
            version=user.avatar_version,
            custom=(avatar.custom_large, avatar.custom_small) if avatar else (None, None),
            uploads=models.AvatarUpload.select().count(),
            audited=models.AuditRecord.select().where(
                models.AuditRecord.action_type == 'user.avatar.update').count())


def assert_webp_avatars(large, small, file):
    for data, side in ((large, imaging.LARGE), (small, imaging.SMALL)):
        image = Image.open(io.BytesIO(bytes(data)))
        image.load()
        assert (image.format, image.mode, image.size) == ('WEBP', 'RGB', (side, side))
        for smuggled in (b'PK\x03\x04', b'<script', b'<html'):
            assert smuggled not in bytes(data)
    assert bytes(large) != file


@pytest.mark.parametrize('name', hostile())
def test_a_hostile_file_sent_to_the_api_is_refused_and_stores_nothing(client, bearer, name):
    before = stored()
    response = api_upload(client, bearer, hostile_file(name))
    assert response.status_code == 400, name
    errors = response.get_json()['validation_errors']
    assert errors == [{'location': 'body.avatar', 'message': HOSTILE[name][1]}]
    assert stored() == before


@pytest.mark.parametrize('name', hostile())
def test_a_hostile_file_uploaded_on_the_profile_page_is_refused_and_kept_nowhere(
        client, logged_in, name):
    before = stored()
    token = csrf_token(client, SETTINGS)
    response = send_file(client, SETTINGS + '/avatar', hostile_file(name), csrf_token=token)
    assert response.status_code == 422
    error = html(response).find(id='avatar-error')
    assert error.get_text(strip=True) == HOSTILE[name][1]
    assert stored() == before


@pytest.mark.parametrize('name', NORMALISED)
def test_an_odd_but_real_image_sent_to_the_api_becomes_webp_avatars(client, bearer, name):
    data = NORMALISED[name]()
    before = stored()
    response = api_upload(client, bearer, data)
    assert response.status_code == 200, response.get_json()
    after = stored()
    assert after['version'] == before['version'] + 1
    assert after['audited'] == before['audited'] + 1 and after['uploads'] == 0
    assert_webp_avatars(*after['custom'], file=data)
    served = client.get(response.get_json()['avatar_url'])
    assert served.status_code == 200 and served.mimetype == 'image/webp'


@pytest.mark.parametrize('name', NORMALISED)
def test_an_odd_but_real_image_saved_on_the_profile_page_becomes_webp_avatars(
        client, logged_in, name):
    data = NORMALISED[name]()
    token = csrf_token(client, SETTINGS)
    response = send_file(client, SETTINGS + '/avatar', data, csrf_token=token)
    assert response.status_code == 303
    step = html(client.get(response.headers['Location']))
    fields = {field['name']: field.get('value', '') for field in step.find_all('input')
              if field.get('name') in ('csrf_token', 'upload', 'x', 'y', 'size')}
    response = client.post(SETTINGS + '/avatar/save', data=fields)
    assert response.status_code == 303, html(response).find(id='avatar-error')
    after = stored()
    assert after['uploads'] == 0
    assert_webp_avatars(*after['custom'], file=data)
