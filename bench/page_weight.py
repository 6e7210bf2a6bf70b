"""Page weight: bytes over the wire for a first load of Settings → Profile as production serves it.

gunicorn serves the app on 127.0.0.1 with a fresh SQLite database and one user (default avatar,
no Gravatar). A logged-in browser with an empty cache asks for the page and then every asset it
references (stylesheet, scripts, favicon, avatar images), each once, over plain sockets so every
byte received is counted: status line, headers and body. The browser has a 1× screen (one device
pixel per CSS pixel): of an <img> with a srcset it fetches only the candidate Chromium picks for
1× (`chosen_image`), not the larger one a 2× screen would take. A script that a step loads on
demand (data-script: the crop step's) is not part of a first load. Compressed run:
Accept-Encoding as Chromium sends it; baseline, same run: no Accept-Encoding. Target (issue 6):
≤ 30 KB (30,000 bytes) compressed. Prints the figures and whether the target is met; exits 0
either way (in quick mode, BENCH_QUICK=1, it only prints them: one load is all it does).
"""
import gzip
import html.parser
import http.client
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import brotli

from _common import judged

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import database  # noqa: E402
import models  # noqa: E402  (the project's module, from the repository root)

TARGET = 30_000
DEVICE_PIXEL_RATIO = 1
BROWSER_ENCODINGS = 'gzip, deflate, br, zstd'
EMAIL, HANDLE, PASSWORD = 'weight@example.com', 'weight', 'correct horse battery'
DECODERS = {None: lambda body: body, 'gzip': gzip.decompress, 'br': brotli.decompress}


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def fetch(port, path, cookie, encodings=None):
    """GET `path` on a fresh connection: (bytes received in all, body bytes as sent, headers,
    decoded body)."""
    lines = [f'GET {path} HTTP/1.1', f'Host: 127.0.0.1:{port}', 'Connection: close',
             f'Cookie: {cookie}']
    if encodings:
        lines.append(f'Accept-Encoding: {encodings}')
    with socket.create_connection(('127.0.0.1', port), timeout=10) as s:
        s.sendall(('\r\n'.join(lines) + '\r\n\r\n').encode())
        received = b''
        while chunk := s.recv(65536):
            received += chunk
    head, _, body = received.partition(b'\r\n\r\n')
    status, *header_lines = head.decode('latin-1').split('\r\n')
    assert ' 200 ' in status + ' ', f'{path}: {status}'
    headers = {k.lower(): v.strip() for k, v in (line.split(':', 1) for line in header_lines)}
    assert 'chunked' not in headers.get('transfer-encoding', ''), path
    return len(received), len(body), headers, DECODERS[headers.get('content-encoding')](body)


def cookies_of(response):
    """The Cookie header a browser sends back after `response` (a login sets two cookies: the
    session's and the device cookie)."""
    return '; '.join(cookie.split(';', 1)[0] for cookie in response.msg.get_all('Set-Cookie'))


def log_in(port):
    """A real login through the form; returns the Cookie header a browser would then send."""
    conn = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
    conn.request('GET', '/login')
    response = conn.getresponse()
    cookie = cookies_of(response)
    token = next(attrs['value'] for tag, attrs in tags(response.read())
                 if tag == 'input' and attrs.get('name') == 'csrf_token')
    form = urllib.parse.urlencode({'email': HANDLE, 'password': PASSWORD, 'csrf_token': token})
    conn.request('POST', '/login', form, {'Cookie': cookie,
                                          'Content-Type': 'application/x-www-form-urlencoded'})
    response = conn.getresponse()
    response.read()
    assert response.status == 302, f'login answered {response.status}'
    conn.close()
    return cookies_of(response)


def assets_of(page):
    """Every URL the page makes a browser fetch at once, each once, in document order."""
    urls = []
    for tag, attrs in tags(page):
        if tag == 'link' and {'stylesheet', 'icon', 'preload', 'modulepreload'} & set(
                (attrs.get('rel') or '').split()):
            urls.append(attrs['href'])
        elif tag == 'script' and attrs.get('src'):
            urls.append(attrs['src'])
        elif tag == 'img' and attrs.get('src') and attrs.get('loading') != 'lazy':
            urls.append(chosen_image(attrs))
    return list(dict.fromkeys(urls))


def chosen_image(attrs, ratio=DEVICE_PIXEL_RATIO):
    """The URL an <img> with these attributes makes Chromium fetch on a screen of `ratio`.

    Without a srcset, its src. With one, the least dense candidate that is dense enough for the
    screen, else the densest (density: x, or w over a `sizes` of one length in px; src counts
    as 1x when no candidate does). That is what the system Chromium was seen to fetch for
    96 px / 460 px candidates, x or w, at 1, 1.25, 1.5, 2 and 3 device pixels per CSS pixel."""
    if not attrs.get('srcset'):
        return attrs['src']
    candidates = []
    for candidate in attrs['srcset'].split(','):  # our URLs hold no comma
        url, *descriptor = candidate.split()
        descriptor = descriptor[0] if descriptor else '1x'
        if descriptor.endswith('x'):
            candidates.append((float(descriptor[:-1]), url))
        elif descriptor.endswith('w'):
            size = re.fullmatch(r'\s*(\d+(?:\.\d+)?)px\s*', attrs.get('sizes') or '')
            if size is None:
                raise SystemExit(f'<img srcset="{attrs["srcset"]}">: w descriptors need sizes '
                                 f'of one length in px here, not {attrs.get("sizes")!r}')
            candidates.append((float(descriptor[:-1]) / float(size[1]), url))
        else:
            raise SystemExit(f'<img srcset="{attrs["srcset"]}">: cannot read {descriptor!r}')
    if attrs.get('src') and all(density != 1 for density, _ in candidates):
        candidates.append((1.0, attrs['src']))
    candidates.sort()
    return next((url for density, url in candidates if density >= ratio), candidates[-1][1])


def tags(page):
    """Every start tag in `page` as (name, attributes); the standard library's parser, so the
    bench needs no test requirement."""
    found = []

    class Parser(html.parser.HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.append((tag, dict(attrs)))

    Parser().feed(page.decode() if isinstance(page, bytes) else page)
    return found


def load(port, cookie, encodings):
    """The first load: [(path, bytes received, body bytes as sent, encoding, decoded body)]."""
    page_path = f'/user/{HANDLE}/settings/profile'
    size, sent, headers, page = fetch(port, page_path, cookie, encodings)
    rows = [(page_path, size, sent, headers.get('content-encoding'), page)]
    for url in assets_of(page):
        size, sent, headers, body = fetch(port, url, cookie, encodings)
        rows.append((url, size, sent, headers.get('content-encoding'), body))
    return rows


def serve(tmp):
    """gunicorn (2 sync workers, as in production) on a fresh database; returns (process, port)."""
    url = f'sqlite:///{tmp}/penstock.db'
    env = dict(os.environ, DATABASE_URL=url, SECRET_KEY='page-weight bench',
               GRAVATAR_ENABLED='0', SECURE_COOKIES='0', PROPAGATION_WORKER_THREAD='0')
    database.db.initialize(database.open_database(url))
    database.migrate(database.db.obj)
    with database.db.connection_context():
        models.User.sign_up(EMAIL, HANDLE, PASSWORD).set_display_name('Page Weight')
    database.db.close()
    port = free_port()
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / 'gunicorn'), '--bind', f'127.0.0.1:{port}',
         '--workers', '2', '--chdir', str(ROOT), 'app:create_app()'],
        env=env, stdout=subprocess.DEVNULL, stderr=open(f'{tmp}/gunicorn.log', 'wb'))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(('127.0.0.1', port), timeout=1).close()
            return process, port
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.1)
    process.kill()
    raise SystemExit('gunicorn did not start: see ' + f'{tmp}/gunicorn.log')


def short(url):
    return re.sub(r'/avatars/[^/]+/', '/avatars/<user>/', url)


def main():
    with tempfile.TemporaryDirectory() as tmp:
        process, port = serve(tmp)
        try:
            cookie = log_in(port)
            compressed = load(port, cookie, BROWSER_ENCODINGS)
            baseline = load(port, cookie, None)
        finally:
            process.kill()
            process.wait()
    plain = {path: (size, body) for path, size, _, _, body in baseline}
    print('Page weight: first load of Settings → Profile (gunicorn, HTTP/1.1, empty cache, '
          f'{DEVICE_PIXEL_RATIO}× screen: of a srcset, only the image it picks)')
    print(f'{"asset":<46} {"encoding":>8} {"body":>8} {"received":>9} {"baseline":>9}')
    for path, size, sent, encoding, body in compressed:
        base_size, base_body = plain[path]
        # The same bytes once decoded (the page itself differs only in its CSRF token).
        assert path.startswith('/user/') or base_body == body, path
        print(f'{short(path):<46} {encoding or "-":>8} {sent:>8,} {size:>9,} {base_size:>9,}')
    total = sum(row[1] for row in compressed)
    bodies = sum(row[2] for row in compressed)
    base_total = sum(row[1] for row in baseline)
    print(f'{"total":<46} {"":>8} {bodies:>8,} {total:>9,} {base_total:>9,}')
    print(f'received compressed / baseline uncompressed: {total / base_total:.2f} '
          f'({base_total / total:.1f}x smaller); headers are {total - bodies:,} bytes of it')
    met = judged(total <= TARGET)
    print(f'target: ≤ {TARGET:,} bytes received, compressed, headers included: '
          f'{total:,} → {met}')
    met = judged(bodies <= TARGET)
    print(f'        (bodies alone, headers left out: {bodies:,} → {met})')


if __name__ == '__main__':
    main()
