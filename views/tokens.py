"""Settings → Tokens: the user's API tokens, created, switched on and off, and deleted."""
from flask import abort, request
from flask_login import current_user

from credentials import TOKEN_LIMIT, Token
from models import Refused
from views import recent_login_required, respond, settings_blueprint

bp = settings_blueprint('tokens', __name__, 'Tokens', 3)


def _tokens_context(**context):
    """What the Tokens panel and its fragments need: the tokens and whether one more fits."""
    tokens = Token.for_user(current_user.id)
    return dict(tokens=tokens, full=len(tokens) >= TOKEN_LIMIT, limit=TOKEN_LIMIT,
                limit_reason=Token.LIMIT_REACHED, **context)


def _own_token(token_id):
    """The current user's token with this id; anyone else's, or none, is a 404."""
    token = Token.of(current_user.id, token_id)
    if token is None:
        abort(404)
    return token


def _list_changed(focus, said):
    """After a change to the list: htmx gets the list and New Token in place, others a GET."""
    return respond('tokens/_list.html', oob=['tokens/_new_token.html'], said=said,
                   then='.page', **_tokens_context(focus=focus))


def _created(status=200, **context):
    """The New Token answer: the secret (or the refusal) in place, with the form and list."""
    return respond('tokens/_created.html', status,
                   oob=['tokens/_new_token.html', 'tokens/_list.html'],
                   **_tokens_context(**context))


@bp.get('/tokens')
def page():
    """Show the Tokens panel."""
    return respond(**_tokens_context())


@bp.post('/tokens')
@recent_login_required  # a token can do through the API what the password guards here
def create():
    """Create a token and show its secret this once; never through a redirect or the session."""
    try:
        token, secret = Token.issue(current_user._get_current_object(), request.remote_addr)
    except Refused as refused:
        return _created(422, error=str(refused))
    return _created(created=token, secret=secret)


@bp.get('/tokens/<token_id>')
def row(token_id):
    """One token's row, for htmx to put back when a delete is cancelled."""
    token = _own_token(token_id)
    return respond('tokens/_row.html', then='.page', token=token, focus=token.id)


@bp.post('/tokens/<token_id>/activate', defaults={'status': 'active'}, endpoint='activate')
@bp.post('/tokens/<token_id>/deactivate', defaults={'status': 'inactive'},
         endpoint='deactivate')
def set_status(token_id, status):
    """Activate or deactivate a token."""
    token = _own_token(token_id)
    token.set_status(status, request.remote_addr)
    done = 'activated' if status == 'active' else 'deactivated'
    return _list_changed(token.id, f'Token {token.masked} {done}.')


@bp.get('/tokens/<token_id>/delete')
def confirm_delete(token_id):
    """Ask before deleting: in the row for htmx, as a page of its own without JavaScript."""
    token = _own_token(token_id)
    return respond('tokens/_confirm_row.html', panel='tokens/_confirm_panel.html',
                   title=f'Delete token {token.masked}', token=token)


@bp.post('/tokens/<token_id>/delete')
def delete(token_id):
    """Delete a token for good."""
    token = _own_token(token_id)
    token.remove(request.remote_addr)
    return _list_changed('new-token', f'Token {token.masked} deleted.')
