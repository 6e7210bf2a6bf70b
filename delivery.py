"""How responses travel: static files under content-hashed names, precompressed, cached a year;
pages and JSON compressed by Flask-Compress, except where compression could leak a secret."""
import gzip
import hashlib
import mimetypes
import os
import re

import brotli
from flask import abort, current_app, redirect, request, url_for
from flask.sessions import SecureCookieSessionInterface
from flask_compress import Compress
from werkzeug.security import safe_join

IMMUTABLE = 'public, max-age=31536000, immutable'
DIGEST_LENGTH = 12
HASHED = re.compile(r'^(?P<stem>.+)\.(?P<digest>[0-9a-f]{%d})(?P<ext>\.[^./]+)$' % DIGEST_LENGTH)
# Comments are for readers of the source, not for every first page load (a kilobyte each in
# app.css and app.js, compressed): a /* … */ block in a stylesheet, a line that is only a //
# comment in a script. Neither file has such text inside a string.
COMMENTS = {'text/css': re.compile(rb'/\*.*?\*/\n?', re.S),
            'text/javascript': re.compile(rb'^[ \t]*//.*\n', re.M)}
COMPRESSIBLE = {'text/css', 'text/javascript', 'application/javascript', 'image/svg+xml',
                'application/json', 'text/plain', 'text/html', 'application/manifest+json'}
# Public answers that are the same for everyone: they carry no cookie, so caches may keep them.
PUBLIC_ENDPOINTS = {'static', 'avatars.image'}
ENCODINGS = ('br', 'gzip')  # preferred first when the client rates them alike
# An SVG opened by itself is a document that could run script; no other asset is a document.
SVG_CONTENT_SECURITY_POLICY = "default-src 'none'; style-src 'unsafe-inline'"

# (path, mtime_ns, size) -> Asset; shared by every app in the process, so each file is read,
# hashed and compressed once per version, not once per create_app() or per request.
_assets = {}


class Asset:
    """One version of one static file: its bytes, digest, type and compressed forms."""

    def __init__(self, path):
        with open(path, 'rb') as f:
            self.body = f.read()
        self.mimetype = mimetypes.guess_type(path)[0] or 'application/octet-stream'
        if self.mimetype in COMMENTS:
            self.body = COMMENTS[self.mimetype].sub(b'', self.body)
        self.digest = hashlib.sha256(self.body).hexdigest()[:DIGEST_LENGTH]
        self.compressible = self.mimetype in COMPRESSIBLE
        self._encoded = {}

    def encoded(self, encoding):
        """The body in `encoding` (made on first use, at the highest level: it is made once)."""
        if encoding not in self._encoded:
            if encoding == 'br':
                data = brotli.compress(self.body, quality=11)
            else:
                data = gzip.compress(self.body, compresslevel=9, mtime=0)
            self._encoded[encoding] = data
        return self._encoded[encoding]


def init_app(app):
    """Serve /static/ through `serve_static`, hash names in url_for('static'), compress GETs."""
    app.config.setdefault('COMPRESS_REGISTER', False)  # our after_request decides, below
    app.config.setdefault('COMPRESS_ALGORITHM', ['br', 'gzip'])
    app.config.setdefault('COMPRESS_BR_LEVEL', 5)
    app.config.setdefault('COMPRESS_STREAMS', False)  # streamed exports go out as they are made
    app.extensions['compress'] = Compress(app)
    app.view_functions['static'] = serve_static
    app.url_defaults(_hashed_static_url)
    app.after_request(_compress)
    app.session_interface = AssetlessSessionInterface()


class AssetlessSessionInterface(SecureCookieSessionInterface):
    """The signed-cookie session, left alone by answers to PUBLIC_ENDPOINTS.

    Flask re-sends a permanent session's cookie with every answer; on an asset that is ~400
    bytes for nothing, and a Set-Cookie (or Vary: Cookie) keeps shared caches from storing it."""

    def save_session(self, app, session, response):
        if request.endpoint in PUBLIC_ENDPOINTS:
            return
        super().save_session(app, session, response)


def _compress(response):
    """Compress answers to GET and HEAD only.

    BREACH needs a secret and attacker-chosen text in one compressed response, and many
    requests made with the victim's cookies. Secrets (a revealed database password, a new
    token, a typed value echoed in a form error) are only ever in answers to POSTs, which stay
    uncompressed; GET pages hold the CSRF token, and cookies are SameSite=Lax, so another site
    can only make them arrive by navigating the whole window, once per guess."""
    if request.method not in ('GET', 'HEAD') or request.endpoint in PUBLIC_ENDPOINTS:
        return response  # static files come precompressed; avatars are WebP already
    return current_app.extensions['compress'].after_request(response)


def is_asset(response):
    """Whether `response` is a static file or an avatar image (not a page, an error page or a
    redirect): it needs none of the headers that only a document uses."""
    return request.endpoint in PUBLIC_ENDPOINTS and response.mimetype != 'text/html'


def asset(filename):
    """The current version of static/`filename`, or None when there is no such file."""
    path = safe_join(current_app.static_folder, filename)
    if path is None:
        return None
    try:
        stat = os.stat(path)
    except OSError:
        return None
    if not os.path.isfile(path):
        return None
    key = (path, stat.st_mtime_ns, stat.st_size)
    found = _assets.get(key)
    if found is None:
        found = _assets[key] = Asset(path)
    return found


def hashed_name(filename):
    """css/app.css -> css/app.<digest>.css, for the file's current content."""
    found = asset(filename)
    if found is None:
        return filename
    stem, ext = os.path.splitext(filename)
    return f'{stem}.{found.digest}{ext}'


def _hashed_static_url(endpoint, values):
    if endpoint == 'static' and 'filename' in values:
        values['filename'] = hashed_name(values['filename'])


def serve_static(filename):
    """A static file: under a hashed name cached for a year, under its own name revalidated.

    A hashed name whose file has changed since redirects to the current name, so a page from
    before a deploy still gets its styles and scripts."""
    found, lifetime = asset(filename), 'no-cache'
    if found is None:
        match = HASHED.match(filename)
        found = match and asset(match['stem'] + match['ext'])
        if not found:
            abort(404)
        if found.digest != match['digest']:
            response = redirect(url_for('static', filename=match['stem'] + match['ext']), 302)
            response.headers['Cache-Control'] = 'no-cache'
            return response
        lifetime = IMMUTABLE
    encoding = None
    if found.compressible:
        encoding = request.accept_encodings.best_match(ENCODINGS)
        if encoding and len(found.encoded(encoding)) >= len(found.body):
            encoding = None
    response = current_app.response_class(found.encoded(encoding) if encoding else found.body,
                                          mimetype=found.mimetype)
    if encoding:
        response.headers['Content-Encoding'] = encoding
    if found.compressible:
        response.vary.add('Accept-Encoding')
    response.headers['Cache-Control'] = lifetime
    if lifetime == IMMUTABLE:
        return response  # never revalidated: its name changes with its content
    response.set_etag(f'{found.digest}-{encoding or "identity"}')
    return response.make_conditional(request)
