"""Settings → Tokens: the user's API tokens, created, switched on and off, and deleted."""
from flask import abort, flash, redirect, request, url_for
from flask_login import current_user

from models import TOKEN_LIMIT, Refused, Token
from views import (
    is_htmx,
    recent_login_required,
    render_fragment,
    render_settings,
    settings_blueprint,
)

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


def _list_changed(focus):
    """After a change to the list: htmx gets the list and New Token in place, others a GET."""
    if is_htmx():
        return render_fragment('tokens/_list_response.html', **_tokens_context(focus=focus))
    return redirect(url_for('.page'))


@bp.get('/tokens')
def page():
    """Show the Tokens panel."""
    return render_settings('tokens/_panel.html', 'Tokens', **_tokens_context())


@bp.post('/tokens')
@recent_login_required  # a token can do through the API what the password guards here
def create():
    """Create a token and show its secret this once; never through a redirect or the session."""
    try:
        token, secret = Token.issue(current_user._get_current_object(), request.remote_addr)
    except Refused as refused:
        if is_htmx():
            return render_fragment('tokens/_created_response.html', 422,
                                   **_tokens_context(error=str(refused)))
        flash(str(refused))
        return redirect(url_for('.page'))
    context = _tokens_context(created=token, secret=secret)
    if is_htmx():
        return render_fragment('tokens/_created_response.html', **context)
    return render_settings('tokens/_panel.html', 'Tokens', **context)


@bp.get('/tokens/<token_id>')
def row(token_id):
    """One token's row, for htmx to put back when a delete is cancelled."""
    token = _own_token(token_id)
    if not is_htmx():
        return redirect(url_for('.page'))
    return render_fragment('tokens/_row.html', token=token, focus=token.id)


@bp.post('/tokens/<token_id>/activate', defaults={'status': 'active'}, endpoint='activate')
@bp.post('/tokens/<token_id>/deactivate', defaults={'status': 'inactive'},
         endpoint='deactivate')
def set_status(token_id, status):
    """Activate or deactivate a token."""
    token = _own_token(token_id)
    token.set_status(status, request.remote_addr)
    flash(f'Token {token.masked} {"activated" if status == "active" else "deactivated"}.')
    return _list_changed(focus=token.id)


@bp.get('/tokens/<token_id>/delete')
def confirm_delete(token_id):
    """Ask before deleting: in the row for htmx, as a page of its own without JavaScript."""
    token = _own_token(token_id)
    if is_htmx():
        return render_fragment('tokens/_confirm_row.html', token=token)
    return render_settings('tokens/_confirm_panel.html', f'Delete token {token.masked}',
                           token=token)


@bp.post('/tokens/<token_id>/delete')
def delete(token_id):
    """Delete a token for good."""
    token = _own_token(token_id)
    token.remove(request.remote_addr)
    flash(f'Token {token.masked} deleted.')
    return _list_changed(focus='new-token')
