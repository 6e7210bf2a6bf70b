"""Settings → Profile: the avatar (upload, crop, Save, Reset), display name and email, and the
database password (its connection strings, Rotate Password and its propagation)."""
from flask import abort, current_app, g, make_response, request, url_for
from flask_login import current_user
from itsdangerous import BadData, URLSafeTimedSerializer
from limits import parse
from werkzeug.exceptions import RequestEntityTooLarge

import addresses
import imaging
import throttle
from models import (
    AVATAR_UPLOAD_LIFETIME,
    CROP_FIELDS,
    DISPLAY_NAME_MAX,
    EMAIL_MAX,
    Avatar,
    AvatarUpload,
    Invalid,
)
from views import (
    is_htmx,
    limiter,
    panel_context,
    recent_login_required,
    respond,
    settings_blueprint,
)
from views.home import hide_connection, reveal_connection
from workspaces import DatabasePassword, Workspace

bp = settings_blueprint('profile', __name__, 'Profile', 1)

TOO_LARGE = 'The file is larger than 10 MB. Choose a smaller image.'
GONE = 'This upload is no longer available. Choose the image again.'
TOO_MANY_UPLOADS = 'You have sent many images in a short time. Wait a minute, then try again.'

CLEARED = 'Display name cleared: the console shows your handle.'

CARD = 'profile/_card.html'
NAME = 'profile/_name_form.html'
EMAIL = 'profile/_email_form.html'
PASSWORD = 'profile/_password.html'
HEADER = '_topbar.html'  # out of band, when the avatar or name in it changed


@bp.context_processor
def profile_facts():
    return dict(avatar_limits=imaging.LIMITS, upload_limit=imaging.UPLOAD_LIMIT,
                centred_box=imaging.centred_box, upscale_warning=imaging.upscale_warning,
                max_name=DISPLAY_NAME_MAX, max_email=EMAIL_MAX)


@bp.context_processor
def rotation_facts():
    return dict(rotation_limit=rotation_limit)


@panel_context(bp)
def _panel_context(context):
    """Fill in what the whole Profile panel needs that `context` lacks: whether the avatar is
    the user's own upload, and the Database Password section."""
    if 'custom_avatar' not in context:
        context['custom_avatar'] = Avatar.has_custom(current_user.id)
    if 'pending' not in context:
        context.update(_password_section())


def _password_section():
    """What the Database Password section shows: the password, the workspaces it opens, and
    whether a rotated password is still on its way to any of them."""
    password = DatabasePassword.for_user(current_user.id)
    workspaces = Workspace.for_user(current_user.id)
    pending = [w for w in workspaces
               if w.password_state(password.version, current_user.handle) == 'pending']
    return dict(password=password, workspaces=workspaces, pending=bool(pending))


def accepts_upload(view):
    """Let `view` take a request body as large as an avatar upload and the form around it."""
    view.max_content_length = imaging.UPLOAD_LIMIT + 64 * 1024
    return view


def _uploader():
    """Whose request this is, for a per-user rate limit: the API token's user or the
    logged-in one."""
    return f'user:{(g.get("api_user") or current_user).id}'


# One count per user for the page's upload and the API's, taken before the image is decoded.
limit_uploads = limiter.shared_limit(lambda: current_app.config['AVATAR_UPLOADS_PER_USER'],
                                     'avatar-upload', key_func=_uploader,
                                     error_message=TOO_MANY_UPLOADS)


def rotation_limit():
    """The most rotations a user may make, in words ("5 an hour")."""
    limit = parse(current_app.config['PASSWORD_ROTATIONS_PER_USER'])
    unit = limit.GRANULARITY.name
    if limit.multiples > 1:
        return f'{limit.amount} every {limit.multiples} {unit}s'
    return f'{limit.amount} {"an" if unit == "hour" else "a"} {unit}'


def count_rotation(user):
    """Count one rotation by `user`, the page's and the API's together, before it runs (each
    sends a System email); past PASSWORD_ROTATIONS_PER_USER, a 429 that says so."""
    throttle.count_action('PASSWORD_ROTATIONS_PER_USER', f'password-rotate:{user.id}',
                          f'You can rotate your database password at most {rotation_limit()}. '
                          'Try again later; nothing was changed.')


def _retry_later(response):
    """`response` to an image that got no turn to be decoded, saying when to send it again."""
    response.headers['Retry-After'] = str(imaging.Busy.retry_after)
    return response


def _references():
    return URLSafeTimedSerializer(current_app.secret_key, salt='avatar-upload')


def upload_reference(upload):
    """A signed value naming `upload` and its owner, for the crop step's forms and URLs."""
    return _references().dumps([upload.user_id, upload.id])


def find_upload(reference):
    """The current user's pending upload that `reference` names, or None."""
    try:
        user_id, upload_id = _references().loads(
            reference or '', max_age=int(AVATAR_UPLOAD_LIFETIME.total_seconds()))
    except (BadData, ValueError, TypeError):
        return None
    return AvatarUpload.pending(current_user, upload_id) if user_id == current_user.id else None


def gone():
    """The answer when a crop step's upload is expired, unknown or someone else's: in the card
    for htmx, where the person is looking; else a page that is not found."""
    # The one answer that differs by more than page or fragment: htmx swaps no 404.
    if is_htmx():
        return _card(422, avatar_error=GONE)
    abort(404, GONE)


def _card(status=200, header=False, **context):
    """The profile card with focus back on Change avatar (or on the crop step), and with
    `header` the header's avatar out of band; the Profile page without JavaScript."""
    if 'upload' not in context:
        context['custom_avatar'] = Avatar.has_custom(current_user.id)
    return respond(CARD, status, oob=[HEADER] if header else (), focus='avatar-file',
                   **context)


def _crop_step(upload, status=200, reference=None, **context):
    """The crop step for `upload`, under `reference` (the one it came with: the same image URL
    the browser has cached) or a new one."""
    return _card(status, upload=upload, reference=reference or upload_reference(upload),
                 **context)


@bp.get('/profile')
def page():
    """Show the Profile panel."""
    return respond()


@bp.post('/profile')
def save_name():
    """Save the display name (an empty one clears it): inline for htmx, POST/redirect/GET
    otherwise."""
    value = request.form.get('display_name', '')
    try:
        current_user.set_display_name(value, request.remote_addr)
    except Invalid as invalid:
        return respond(NAME, 422, errors=invalid.errors, value=value)
    said = 'Display name saved.' if current_user.display_name else CLEARED
    return respond(NAME, oob=[HEADER], said=said, then='.page')


@bp.post('/profile/email')
@recent_login_required
def change_email():
    """Change email: send the new address its link, and tell the current one."""
    value = request.form.get('new_email', '')
    try:
        address = addresses.request_change(current_user, value, request.remote_addr)
    except Invalid as invalid:
        return respond(EMAIL, 422, errors=invalid.errors, new_email=value)
    except addresses.TooSoon as too_soon:
        return respond(EMAIL, 422, errors={'new_email': str(too_soon)}, new_email=value)
    return respond(EMAIL, said=f'We sent a link to {address}. Open it within 24 hours to make '
                               'it your email address.', then='.page')


@bp.post('/profile/avatar')
@limit_uploads
@accepts_upload
def upload_avatar():
    """Keep an uploaded image for the crop step, then show that step."""
    file = request.files.get('avatar')
    if file is None or not file.filename:
        return _card(422, avatar_error='Choose a JPEG or PNG file first.')
    try:
        upload = AvatarUpload.start(current_user, file.read(imaging.UPLOAD_LIMIT + 1))
    except imaging.BadImage as bad:
        return _card(422, avatar_error=bad.message)
    except imaging.Busy as busy:
        return _retry_later(_card(503, avatar_error=busy.message))
    return _crop_step(upload, then=url_for('.edit_avatar', upload=upload_reference(upload)))


@bp.get('/profile/avatar/edit')
def edit_avatar():
    """The crop step for a pending upload: the image and the square to keep, the square that
    x, y and size give (where Preview leads without JavaScript) or else the centred one."""
    reference = request.args.get('upload')
    upload = find_upload(reference)
    if upload is None:
        return gone()
    fields = _crop_fields(request.args)
    if not any(fields.values()):
        return _crop_step(upload, reference=reference)
    try:
        box = _crop_box(upload, fields)
    except (Invalid, imaging.BadImage) as refused:
        return _crop_step(upload, 422, reference, crop=fields, avatar_error=_refusal(refused))
    return _crop_step(upload, reference=reference, crop=fields, box=box)


@bp.post('/profile/avatar/edit')
def preview_crop():
    """Preview, without JavaScript: show the square that x, y and size give on the image, and
    the avatar it would make, before anything is saved."""
    reference = request.form.get('upload')
    upload = find_upload(reference)
    if upload is None:
        return gone()
    fields = _crop_fields(request.form)
    try:
        box = _crop_box(upload, fields)
    except (Invalid, imaging.BadImage) as refused:
        return _crop_step(upload, 422, reference, crop=fields, avatar_error=_refusal(refused))
    return _crop_step(upload, reference=reference, crop=fields, box=box,
                      then=url_for('.edit_avatar', upload=reference, **fields))


def _crop_fields(values):
    return {name: values.get(name, '').strip() for name in CROP_FIELDS}


def _crop_box(upload, fields):
    """The square (x, y, size) that the text `fields` give, inside `upload`'s image; raises
    Invalid or imaging.BadImage."""
    box = Avatar.crop_box(fields)
    imaging.check_box(upload.width, upload.height, *box)
    return box


def _refusal(refused):
    """What a refused crop square says in the crop step's one place for it: each message once."""
    if isinstance(refused, Invalid):
        return ' '.join(dict.fromkeys(refused.errors.values()))
    return refused.message


def _drawn_upload():
    """The pending upload and the square that the query's upload, x, y and size name, for the
    crop step's images; else 404."""
    upload = find_upload(request.args.get('upload'))
    if upload is None:
        abort(404, GONE)
    try:
        return upload, _crop_box(upload, _crop_fields(request.args))
    except (Invalid, imaging.BadImage):
        abort(404)


def _image(data, content_type):
    response = make_response(data)
    response.headers['Content-Type'] = content_type
    response.headers['Cache-Control'] = 'private, max-age=3600'
    return response


@bp.get('/profile/avatar/preview')
def avatar_preview():
    """The working copy of a pending upload that the crop step shows."""
    upload = find_upload(request.args.get('upload'))
    if upload is None:
        abort(404, GONE)
    return _image(bytes(upload.preview), 'image/jpeg')


@bp.get('/profile/avatar/square')
def avatar_square():
    """The crop step's square without JavaScript, laid over the working copy: a PNG."""
    upload, box = _drawn_upload()
    return _image(imaging.crop_square(upload.width, upload.height,
                                      (upload.preview_width, upload.preview_height), box),
                  'image/png')


@bp.get('/profile/avatar/result')
def avatar_result():
    """What the avatar would show with the square given, without JavaScript: a JPEG."""
    upload, box = _drawn_upload()
    try:
        data = imaging.cropped_preview(bytes(upload.preview), upload.width, upload.height, box)
    except imaging.Busy:
        return _retry_later(make_response('', 503))
    return _image(data, 'image/jpeg')


@bp.post('/profile/avatar/save')
def save_avatar():
    """Crop the avatar from the pending upload's original and show it everywhere."""
    upload = find_upload(request.form.get('upload'))
    if upload is None:
        return gone()
    fields = _crop_fields(request.form)
    try:
        upload.crop(current_user, fields, request.remote_addr)
    except (Invalid, imaging.BadImage) as refused:
        return _crop_step(upload, 422, crop=fields, avatar_error=_refusal(refused))
    except imaging.Busy as busy:
        return _retry_later(_crop_step(upload, 503, crop=fields, avatar_error=busy.message))
    return _card(header=True, said='Avatar saved.', then='.page')


@bp.post('/profile/avatar/cancel')
def cancel_avatar():
    """Leave the crop step without changing the avatar."""
    upload = find_upload(request.form.get('upload'))
    if upload is not None:  # one that already went is as good as cancelled
        upload.cancel()
    return _card(then='.page')


@bp.post('/profile/avatar/reset')
def reset_avatar():
    """Go back to the default avatar."""
    reset = Avatar.reset(current_user, request.remote_addr)
    return _card(header=True, said='Avatar reset to the default.' if reset else None,
                 then='.page')


@bp.errorhandler(RequestEntityTooLarge)
def too_large(error):
    """413 in words, in the profile card where the upload was chosen."""
    if request.endpoint != 'profile.upload_avatar':  # no file went to the other forms
        return error
    return _card(413, avatar_error=TOO_LARGE)


@bp.errorhandler(429)
def too_many_requests(error):
    """429 in words where the button was: Rotate Password's section, or the profile card
    where the upload was chosen."""
    if request.endpoint == 'profile.rotate_password':
        return respond(PASSWORD, 429, rotate_error=error.description, **_password_section())
    return _card(429, avatar_error=error.description)


ROTATED = ('Database password rotated. It may take a couple of minutes to reach every '
           'workspace; existing connections are not terminated.')
ROTATED_ENDING = ('Database password rotated. It may take a couple of minutes to reach every '
                  'workspace; then every open connection to them is ended.')
PROPAGATED = 'The new database password has reached every workspace.'


@bp.get('/profile/password')
def password():
    """The Database Password section (htmx's Cancel asks for it), or the Profile page."""
    return respond(PASSWORD, focus_button=True, **_password_section())


@bp.post('/profile/password/workspaces/<workspace_id>')
def reveal_password(workspace_id):
    """Reveal password in a workspace's connection string: in place for htmx, else the Profile
    page with that string revealed (so without JavaScript the user stays on Profile)."""
    return reveal_connection(workspace_id)


@bp.get('/profile/password/workspaces/<workspace_id>')
def hide_password(workspace_id):
    """Hide password: the string masked again for htmx, else back to it on Profile."""
    return hide_connection(workspace_id, then=f'.page#connection-{workspace_id}')


@bp.get('/profile/password/status')
def password_status():
    """Each workspace's propagation state, for htmx's polling (said once every workspace has
    the password); else the Profile page."""
    section = _password_section()
    return respond('profile/_password_status.html',
                   said=None if section['pending'] else PROPAGATED, **section)


@bp.get('/profile/password/rotate')
@recent_login_required
def confirm_rotate():
    """The Rotate Password confirmation step: inline for htmx, the Profile page otherwise."""
    return respond(PASSWORD, confirming=True, **_password_section())


@bp.post('/profile/password/rotate')
@recent_login_required
def rotate_password():
    """Make a new database password and start carrying it to every workspace (ending their
    open connections when Also end open connections is ticked)."""
    end = request.form.get('end_connections') in ('1', 'on', 'true')
    user = current_user._get_current_object()
    count_rotation(user)
    DatabasePassword.rotate(user, request.remote_addr, end_connections=end)
    return respond(PASSWORD, rotated=True, said=ROTATED_ENDING if end else ROTATED,
                   then='.page#database-password', **_password_section())
