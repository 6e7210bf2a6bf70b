"""Static files under content-hashed names cached for a year; compression of what pays for it."""
import gzip
import io

import brotli
import pytest
from bs4 import BeautifulSoup
from flask import url_for
from PIL import Image

from tests.conftest import HTMX, csrf_token, html

IMMUTABLE = 'public, max-age=31536000, immutable'
ASSETS = ('favicon.svg', 'css/app.css', 'vendor/htmx.min.js', 'js/app.js', 'js/avatar.js')


def asset_urls(page):
    """Every static URL a page references, as a browser would fetch them."""
    soup = html(page)
    return ([link['href'] for link in soup.find_all('link', href=True)]
            + [script['src'] for script in soup.find_all('script', src=True)])


def read(app, name):
    with open(f'{app.static_folder}/{name}', 'rb') as f:
        return f.read()


def test_pages_reference_every_asset_by_a_name_that_carries_its_content_hash(app, client,
                                                                          logged_in):
    urls = asset_urls(client.get('/user/alice/settings/profile'))
    assert len(urls) == len(ASSETS)
    for name in ASSETS:
        stem, ext = name.rsplit('.', 1)
        digests = [url[len(f'/static/{stem}.'):-len(f'.{ext}')] for url in urls
                   if url.startswith(f'/static/{stem}.') and url.endswith(f'.{ext}')]
        assert len(digests) == 1, (name, urls)
        assert len(digests[0]) == 12 and all(c in '0123456789abcdef' for c in digests[0])


def test_hashed_assets_are_cached_for_a_year_and_serve_the_file_itself(app, client, logged_in):
    urls = asset_urls(client.get('/user/alice/settings/profile'))
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200
        assert response.headers['Cache-Control'] == IMMUTABLE
        assert 'Content-Encoding' not in response.headers  # this client asked for none
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


def test_a_hashed_asset_answers_304_to_a_matching_etag(client):
    url = asset_urls(client.get('/login'))[1]
    first = client.get(url, headers={'Accept-Encoding': 'gzip'})
    again = client.get(url, headers={'Accept-Encoding': 'gzip',
                                     'If-None-Match': first.headers['ETag']})
    assert again.status_code == 304


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
    avatar = html(page).find('img', class_='avatar')['src']
    for url in asset_urls(page) + [avatar]:
        response = client.get(url)
        assert response.status_code == 200, url
        assert 'Set-Cookie' not in response.headers, url
        assert 'Cookie' not in response.headers.get('Vary', ''), url
    assert client.get('/user/alice/settings/profile').status_code == 200  # still logged in
