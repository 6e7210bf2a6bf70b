"""Avatar images. For now every avatar is generated from the user's initials."""
import hashlib

from flask import Blueprint, abort, make_response, render_template

from models import User

bp = Blueprint('avatars', __name__)

# Background colours with white text at a contrast of 4.5:1 or more.
PALETTE = ('#b4411c', '#8a4baf', '#1f6f8b', '#2e7d32', '#a3365b', '#5c6bc0', '#00796b', '#6d4c41')


@bp.get('/avatars/<user_id>/<int:version>.svg')
def initials(user_id, version):
    """The user's initials on a colour of their own; the version in the URL busts caches."""
    user = User.get_or_none(User.id == user_id)
    if user is None:
        abort(404)
    colour = PALETTE[hashlib.sha256(user.id.encode()).digest()[0] % len(PALETTE)]
    response = make_response(render_template('avatars/initials.svg', initials=user.initials,
                                             colour=colour))
    response.headers['Content-Type'] = 'image/svg+xml'
    response.headers['Cache-Control'] = ('public, max-age=31536000, immutable'
                                         if version == user.version_id else 'no-cache')
    return response
