"""Avatar images, served from the database under URLs that change when the avatar does."""
from flask import Blueprint, abort, make_response, redirect, request, url_for

import imaging
from models import Avatar, User

bp = Blueprint('avatars', __name__)

SIZES = (imaging.LARGE, imaging.SMALL)


def avatar_url(user, size=imaging.LARGE, external=False):
    """Where `user`'s current avatar is, at `size` px."""
    return url_for('avatars.image', user_id=user.id, version=user.avatar_version, size=size,
                   _external=external)


@bp.get('/avatars/<user_id>/<int:version>/<int:size>.webp')
def image(user_id, version, size):
    """The avatar as WebP. An old version's URL redirects to the current one."""
    user = User.select(User.id, User.avatar_version).where(User.id == user_id).get_or_none()
    if user is None or size not in SIZES:
        abort(404)
    if version != user.avatar_version:
        response = redirect(avatar_url(user, size), 302)
        response.headers['Cache-Control'] = 'no-cache'
        return response
    response = make_response(Avatar.for_user(user.id).image(size))
    response.headers['Content-Type'] = 'image/webp'
    response.headers['Cache-Control'] = 'public, max-age=31536000, immutable'
    response.set_etag(f'{user.id}-{version}-{size}')
    return response.make_conditional(request)
