"""The JSON API under /api/v0: bearer-token auth, problem-style errors, keyset pages."""
import datetime
import functools
import json

from flask import Blueprint, current_app, g, jsonify, request, url_for
from itsdangerous import BadSignature, URLSafeSerializer
from werkzeug.exceptions import HTTPException

import models
from views import csrf

bp = Blueprint('api', __name__, url_prefix='/api/v0')
csrf.exempt(bp)  # bearer tokens, not cookies: a cross-site page cannot send them

PAGE_DEFAULT, PAGE_MAX = 25, 100


class ApiError(Exception):
    """An error answered as SPEC's error object."""

    def __init__(self, status, title, detail='', validation_errors=None, headers=None):
        super().__init__(detail or title)
        self.status, self.title, self.detail = status, title, detail
        self.validation_errors = validation_errors or []
        self.headers = headers or {}


def problem(status, title, detail='', validation_errors=None, headers=None):
    response = jsonify({
        'type': 'about:blank', 'title': title, 'status': status, 'detail': detail,
        'instance': request.path,
        'validation_errors': [{'location': location, 'message': message}
                              for location, message in (validation_errors or [])],
    })
    response.status_code = status
    response.headers.update(headers or {})
    return response


@bp.errorhandler(ApiError)
def api_error(error):
    return problem(error.status, error.title, error.detail, error.validation_errors,
                   error.headers)


@bp.app_errorhandler(HTTPException)
def http_error(error):
    """Errors under /api/ are JSON, even for paths no route matches; elsewhere, Flask's own."""
    if not request.path.startswith(bp.url_prefix + '/'):
        return error
    return problem(error.code, error.name, error.description)


def bearer_required(view):
    """Authenticate `Authorization: Bearer <token>`; sets g.api_user and g.api_credential."""
    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        scheme, _, secret = request.headers.get('Authorization', '').partition(' ')
        credential = models.bearer(secret.strip()) if scheme.lower() == 'bearer' else None
        if credential is None:
            raise ApiError(401, 'Unauthorized',
                           'Send a valid, active token as "Authorization: Bearer <token>".',
                           headers={'WWW-Authenticate': 'Bearer'})
        g.api_credential = credential
        g.api_user = credential.user
        return view(*args, **kwargs)
    return wrapped


def own_handle(handle):
    """Only the token's own user exists here: any other handle is a 404."""
    if handle != g.api_user.handle:
        raise ApiError(404, 'Not Found', f'No user with handle "{handle}".')


def json_body(allowed):
    """The request's JSON object, with only `allowed` fields; anything else is a 400."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, 'Bad Request', 'The body must be a JSON object.',
                       [('body', 'expected a JSON object')])
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise ApiError(400, 'Bad Request', 'The body has fields this endpoint does not take.',
                       [(f'body.{name}', 'unknown field') for name in unknown])
    return body


def _cursor_serializer():
    return URLSafeSerializer(current_app.secret_key, salt='api-next-token')


def encode_cursor(cursor):
    created_at, record_id = cursor
    return _cursor_serializer().dumps([created_at.isoformat(), record_id])


def decode_cursor(token):
    try:
        created_at, record_id = _cursor_serializer().loads(token)
        return datetime.datetime.fromisoformat(created_at), record_id
    except (BadSignature, ValueError, TypeError):
        raise ApiError(400, 'Bad Request', 'next_token is not one this API gave out.',
                       [('query.next_token', 'invalid')]) from None


def page_args():
    """`limit` (1..100, default 25) and the decoded `next_token` cursor, or a 400."""
    raw = request.args.get('limit', str(PAGE_DEFAULT))
    if not raw.isdigit() or not 1 <= int(raw) <= PAGE_MAX:
        raise ApiError(400, 'Bad Request', f'limit must be a whole number from 1 to {PAGE_MAX}.',
                       [('query.limit', f'must be 1 to {PAGE_MAX}')])
    token = request.args.get('next_token')
    return int(raw), decode_cursor(token) if token else None


def listing(items, cursor):
    body = {'items': items}
    if cursor is not None:
        body['next_token'] = encode_cursor(cursor)
    return jsonify(body)


def timestamp(value):
    return value.isoformat(timespec='milliseconds') + 'Z' if value else None


def avatar_url(user):
    return url_for('avatars.initials', user_id=user.id, version=user.version_id, _external=True)


def user_json(user):
    return {'id': user.id, 'handle': user.handle, 'display_name': user.display_name or '',
            'avatar_url': avatar_url(user), 'status': user.status,
            'created_at': timestamp(user.created_at), 'updated_at': timestamp(user.updated_at),
            'version_id': user.version_id}


def token_json(token):
    return {'id': token.id, 'user_id': token.user_id, 'status': token.status,
            'last4': token.last4, 'created_at': timestamp(token.created_at),
            'updated_at': timestamp(token.updated_at),
            'last_used_at': timestamp(token.last_used_at), 'version_id': token.version_id}


def audit_json(record):
    actor = models.User.get_or_none(models.User.id == record.actor_id)
    return {'id': record.id, 'action_type': record.action_type, 'actor_id': record.actor_id,
            'actor_handle': record.actor_handle or '',
            'actor_display_name': record.actor_display_name or '',
            'actor_avatar_url': avatar_url(actor) if actor else '',
            'actor_ip': record.actor_ip or '', 'identity_id': record.identity_id,
            'identity_handle': record.identity_handle, 'target_id': record.target_id,
            'target_handle': record.target_handle, 'data': json.loads(record.data),
            'created_at': timestamp(record.created_at)}


@bp.get('/actor')
@bearer_required
def actor():
    """The user the bearer token belongs to."""
    return jsonify(user_json(g.api_user))

