"""Static files under content-hashed names cached for a year; compression of what pays for it."""
import gzip
import io
import re

import brotli

import pytest
from bs4 import BeautifulSoup
from flask import url_for
from PIL import Image

from tests.helpers import HTMX, crop_step, csrf_token, html, offered

IMMUTABLE = 'public, max-age=31536000, immutable'
ASSETS = ('favicon.svg', 'css/app.css', 'vendor/htmx.min.js', 'js/app.js')
ON_DEMAND = ('js/crop.js',)  # named by the step that needs it (data-script), loaded by app.js


def asset_urls(page):
    """Every static URL a page references, as a browser would fetch them (a data-script once
    app.js sees it)."""
    soup = html(page)
    return ([link['href'] for link in soup.find_all('link', href=True)]
            + [script['src'] for script in soup.find_all('script', src=True)]
            + [element['data-script'] for element in soup.find_all(attrs={'data-script': True})])


def hashed_names(urls, names):
    """{name: its digest in `urls`} for each of `names`, checking each is named exactly once."""
    digests = {}
    for name in names:
        stem, ext = name.rsplit('.', 1)
        found = [url[len(f'/static/{stem}.'):-len(f'.{ext}')] for url in urls
                 if url.startswith(f'/static/{stem}.') and url.endswith(f'.{ext}')]
        assert len(found) == 1, (name, urls)
        digests[name] = found[0]
    return digests


def read(app, name):
    """The file as it is served: a stylesheet or script of ours without its comments."""
    with open(f'{app.static_folder}/{name}', 'rb') as f:
        body = f.read()
    if name.endswith('.css'):
        return re.sub(rb'/\*.*?\*/\n?', b'', body, flags=re.S)
    if name.endswith('.js'):
        return re.sub(rb'^[ \t]*//.*\n', b'', body, flags=re.M)
    return body


@pytest.mark.parametrize('name, comment, code', [
    ('css/app.css', b'/* Penstock: a small hand-written stylesheet', b'.settings {'),
    ('js/app.js', b'// Small enhancements on top of htmx', b"'use strict';"),
    ('js/crop.js', b'// The avatar crop step', b"'use strict';"),
])
def test_stylesheets_and_scripts_go_out_without_their_comments(app, client, name, comment,
                                                               code):
    with open(f'{app.static_folder}/{name}', 'rb') as f:
        source = f.read()
    assert comment in source
    served = client.get(f'/static/{name}').get_data()
    assert comment not in served and code in served
    assert len(served) < len(source) * 0.9


def test_pages_reference_every_asset_by_a_name_that_carries_its_content_hash(app, client,
                                                                             logged_in):
    urls = asset_urls(client.get('/user/alice/settings/profile'))
    assert len(urls) == len(ASSETS)
    for digest in hashed_names(urls, ASSETS).values():
        assert len(digest) == 12 and all(c in '0123456789abcdef' for c in digest)


@pytest.mark.parametrize('headers', [{}, HTMX], ids=['page', 'htmx'])
def test_the_crop_script_is_named_only_by_the_crop_step_that_needs_it(app, client, logged_in,
                                                                      headers):
    profile = asset_urls(client.get('/user/alice/settings/profile', headers=headers))
    assert not [url for url in profile if '/js/crop.' in url]
    _, step = crop_step(client)
    if headers:
        step = client.get(step.request.full_path, headers=headers)
        assert html(step).find('html') is None
    stage = html(step).find(attrs={'data-crop': True})
    digest = hashed_names([stage['data-script']], ON_DEMAND)['js/crop.js']
    response = client.get(stage['data-script'])
    assert response.status_code == 200 and response.mimetype == 'text/javascript'
    assert response.get_data() == read(app, 'js/crop.js') and len(digest) == 12


def test_hashed_assets_are_cached_for_a_year_and_serve_the_file_itself(app, client, logged_in):
    urls = asset_urls(client.get('/user/alice/settings/profile'))
    urls += asset_urls(crop_step(client)[1])
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200
        assert response.headers['Cache-Control'] == IMMUTABLE
        assert 'Content-Encoding' not in response.headers  # this client asked for none
        # never revalidated (its name changes with its content), so no validator to send
        assert 'ETag' not in response.headers and 'Last-Modified' not in response.headers
    css = next(url for url in urls if url.endswith('.css'))
    assert client.get(css).get_data() == read(app, 'css/app.css')
    assert client.get(css).mimetype == 'text/css'


def test_a_changed_file_gets_a_new_name_and_its_old_name_leads_to_the_new_one(app, client,
                                                                              tmp_path):
    app.static_folder = str(tmp_path)
    (tmp_path / 'site.css').write_text('body { color: red }')
    old = client.get('/login')  # any page; the name is made when the URL is
    with app.test_request_context():
        before = url_for('static', filename='site.css')
        (tmp_path / 'site.css').write_text('body { color: blue; }')
        after = url_for('static', filename='site.css')
    assert old.status_code == 200
    assert before != after and before.startswith('/static/site.') and after.endswith('.css')
    assert client.get(after).get_data() == b'body { color: blue; }'
    moved = client.get(before)
    assert moved.status_code == 302 and moved.headers['Location'].endswith(after)
    assert moved.headers['Cache-Control'] == 'no-cache'  # never cache the old name's answer


def test_unhashed_paths_still_work_for_links_from_outside_but_are_revalidated(app, client):
    response = client.get('/static/css/app.css')
    assert response.status_code == 200 and response.get_data() == read(app, 'css/app.css')
    assert response.headers['Cache-Control'] == 'no-cache'
    again = client.get('/static/css/app.css', headers={'If-None-Match': response.headers['ETag']})
    assert again.status_code == 304 and again.get_data() == b''


def test_an_unhashed_name_answers_304_to_the_etag_of_the_encoding_it_sent(client):
    first = client.get('/static/js/app.js', headers={'Accept-Encoding': 'gzip'})
    assert first.headers['Content-Encoding'] == 'gzip'
    again = client.get('/static/js/app.js', headers={'Accept-Encoding': 'gzip',
                                                     'If-None-Match': first.headers['ETag']})
    assert again.status_code == 304
    other = client.get('/static/js/app.js', headers={'Accept-Encoding': 'br',
                                                     'If-None-Match': first.headers['ETag']})
    assert other.status_code == 200 and other.headers['Content-Encoding'] == 'br'


@pytest.mark.parametrize('encoding, decompress', [('gzip', gzip.decompress),
                                                  ('br', brotli.decompress)])
def test_css_and_javascript_are_sent_compressed_when_the_client_takes_it(app, client, encoding,
                                                                         decompress):
    for url in asset_urls(client.get('/login')):
        if not url.endswith(('.css', '.js')):
            continue
        response = client.get(url, headers={'Accept-Encoding': encoding})
        assert response.headers['Content-Encoding'] == encoding
        assert 'Accept-Encoding' in response.headers['Vary']
        body = response.get_data()
        name = url.split('/', 2)[2]
        stem, digest, ext = name.rsplit('.', 2)
        original = read(app, f'{stem}.{ext}')
        assert decompress(body) == original and len(body) < len(original) / 2


def test_a_client_that_prefers_gzip_gets_gzip(client):
    css = next(url for url in asset_urls(client.get('/login')) if url.endswith('.css'))
    response = client.get(css, headers={'Accept-Encoding': 'br;q=0.5, gzip'})
    assert response.headers['Content-Encoding'] == 'gzip'


def test_pages_are_sent_gzip_compressed_with_vary_kept(client, logged_in):
    response = client.get('/user/alice/settings/profile', headers={'Accept-Encoding': 'gzip'})
    assert response.status_code == 200 and response.headers['Content-Encoding'] == 'gzip'
    vary = [value.strip() for value in response.headers['Vary'].split(',')]
    assert {'HX-Request', 'Accept-Encoding', 'Cookie'} <= set(vary)
    page = BeautifulSoup(gzip.decompress(response.get_data()), 'html.parser')
    assert page.title.get_text() == 'Profile · Penstock'


def test_htmx_fragments_are_compressed_and_still_swap(client, logged_in):
    response = client.get('/user/alice/settings/notifications',
                          headers={**HTMX, 'Accept-Encoding': 'gzip'})
    assert response.status_code == 200
    fragment = gzip.decompress(response.get_data()).decode()
    assert 'id="panel"' in fragment or 'Notifications' in fragment
    assert 'HX-Request' in response.headers['Vary']


def test_images_are_never_recompressed(client, logged_in):
    src = html(client.get('/user/alice/settings/profile')).find('img', class_='avatar')['src']
    response = client.get(src, headers={'Accept-Encoding': 'gzip, br'})
    assert response.status_code == 200 and 'Content-Encoding' not in response.headers
    assert 'Vary' not in response.headers  # the same bytes whatever the client takes
    assert Image.open(io.BytesIO(response.get_data())).format == 'WEBP'
    again = client.get(src, headers={'Accept-Encoding': 'gzip, br',
                                     'If-None-Match': response.headers['ETag']})
    assert again.status_code == 304


def test_answers_to_posts_are_never_compressed_so_revealed_secrets_cannot_leak(client,
                                                                               logged_in):
    # BREACH: a new token's secret (or a revealed password) in a compressed answer
    token = csrf_token(client, '/user/alice/settings/tokens')
    response = client.post('/user/alice/settings/tokens', data={'csrf_token': token},
                           headers={'Accept-Encoding': 'gzip, br'})
    assert response.status_code == 200 and 'pst_' in response.get_data(as_text=True)
    assert 'Content-Encoding' not in response.headers


def test_streamed_exports_are_sent_as_made(client, logged_in):
    response = client.get('/user/alice/settings/audit/export.csv',
                          headers={'Accept-Encoding': 'gzip, br'})
    assert response.status_code == 200 and response.is_streamed
    assert 'Content-Encoding' not in response.headers
    assert response.get_data(as_text=True).splitlines()[0]


def test_assets_and_avatars_carry_no_cookie_so_shared_caches_can_keep_them(client, logged_in):
    page = client.get('/user/alice/settings/profile')
    assert 'Set-Cookie' in page.headers  # the page itself still refreshes the session
    card = html(page).find('label', attrs={'for': 'avatar-file'}).find('img', class_='avatar')
    avatars = sorted(set(offered(card).values()))
    assert len(avatars) == 2  # 96 px and 460 px
    for url in asset_urls(page) + avatars:
        response = client.get(url)
        assert response.status_code == 200, url
        assert 'Set-Cookie' not in response.headers, url
        assert 'Cookie' not in response.headers.get('Vary', ''), url
    assert client.get('/user/alice/settings/profile').status_code == 200  # still logged in
