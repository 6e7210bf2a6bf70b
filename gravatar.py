"""Finds a new user's public avatar by the Gravatar protocol, off the request path.

A found image is cropped and stored like an upload, so browsers never fetch it from a third
party; on any failure (none found, server down, slow or sending junk) the generated default
stays."""
import hashlib
import http.client
import logging
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import database
import imaging
import models

log = logging.getLogger(__name__)
_lookups = ThreadPoolExecutor(max_workers=2, thread_name_prefix='gravatar')


def url_for_email(base_url, email):
    """The Gravatar URL for `email`: SHA-256 of the trimmed, lower-cased address; no
    default image, so an address without one is a 404."""
    digest = hashlib.sha256(email.strip().lower().encode()).hexdigest()
    return f'{base_url.rstrip("/")}/{digest}?s={imaging.LARGE}&d=404'


def fetch(url, timeout):
    """The image at `url`, or None when there is none, it is too large, or it is late: each
    wait gets `timeout` seconds, and the whole body must be in `timeout` seconds after the
    start (so a server that trickles bytes is cut off too)."""
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(url, headers={'User-Agent': 'Penstock avatar lookup'})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if response.status != 200:
                return None
            chunks, size = [], 0
            while size <= imaging.UPLOAD_LIMIT:
                if time.monotonic() > deadline:
                    return None
                chunk = response.read1(64 * 1024)  # what has come; read() waits for all
                if not chunk:
                    return b''.join(chunks)
                chunks.append(chunk)
                size += len(chunk)
            return None  # larger than any upload may be
    except (OSError, ValueError, http.client.HTTPException):  # 404, refused, timed out,
        return None  # a bad URL, or an answer that is not HTTP


def look_up(config, user_id, email):
    """Fetch the user's public avatar and make it their default; True when one was found."""
    data = fetch(url_for_email(config['GRAVATAR_URL'], email), config['GRAVATAR_TIMEOUT'])
    if not data:
        return False
    try:
        images = imaging.avatar(data)
    except imaging.BadImage:
        log.info('The public avatar found for user %s is not a usable image.', user_id)
        return False
    except imaging.Busy:
        log.info('No turn to decode the public avatar found for user %s; the drawn one stays.',
                 user_id)
        return False
    with database.db.connection_context():
        return models.Avatar.adopt_found(user_id, images)


def look_up_later(app, user):
    """Start looking up `user`'s public avatar in the background, unless turned off.
    Returns the Future, or None."""
    if not app.config['GRAVATAR_ENABLED']:
        return None
    return _lookups.submit(_look_up_or_log, dict(app.config), user.id, user.email)


def _look_up_or_log(config, user_id, email):
    """look_up, logging what goes wrong: nobody waits for a lookup started at signup."""
    try:
        return look_up(config, user_id, email)
    except Exception:
        log.exception('Looking up the public avatar of user %s failed.', user_id)
        return False
