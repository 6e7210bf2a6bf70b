"""The console home: the user's workspaces, created and deleted there, with their connection
strings (password masked, revealed or copied on request); and short links into Settings."""
from flask import (
    Blueprint,
    abort,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user

from models import (
    WORKSPACE_HANDLE_RULES,
    WORKSPACE_LIMIT,
    DatabasePassword,
    Invalid,
    Refused,
    Workspace,
)
from views import is_htmx, login_manager, render_fragment

bp = Blueprint('home', __name__)

TITLE = 'Workspaces'


@bp.before_request
def require_login():
    """Everything here is the logged-in user's own."""
    if not current_user.is_authenticated:
        return login_manager.unauthorized()


def _home_context(**context):
    """What the home page and its fragments need: the workspaces, the password that goes in
    their connection strings (made on first use, so only when there is a workspace), and
    whether one more fits."""
    workspaces = Workspace.for_user(current_user.id)
    password = DatabasePassword.for_user(current_user.id) if workspaces else None
    context.setdefault('form', {})
    return dict(workspaces=workspaces, password=password, user_handle=current_user.handle,
                full=len(workspaces) >= WORKSPACE_LIMIT, limit=WORKSPACE_LIMIT,
                rules=WORKSPACE_HANDLE_RULES, limit_reason=Workspace.LIMIT_REACHED, **context)


def _render_home(status=200, **context):
    """The home page, or for htmx only its panel (with the flash messages out of band)."""
    template = 'home/_fragment.html' if is_htmx() else 'home/page.html'
    response = make_response(
        render_template(template, title=TITLE, **_home_context(**context)), status)
    response.vary.add('HX-Request')
    return response


def _list_changed(status=200, **context):
    """After a change to the list: htmx gets the list, the create form and the flash
    messages; without JavaScript a refusal is the page with the form's error, else a GET."""
    if is_htmx():
        return render_fragment('home/_list_response.html', status, **_home_context(**context))
    if status != 200:
        return _render_home(status, **context)
    return redirect(url_for('.index'), 303)


def _own_workspace(workspace_id):
    """The current user's workspace with this id; anyone else's, or none, is a 404."""
    workspace = Workspace.of(current_user.id, workspace_id)
    if workspace is None:
        abort(404)
    return workspace


@bp.get('/')
def index():
    """The console home: the user's workspaces and the form to create one."""
    return _render_home()


@bp.get('/settings')
def settings():
    """A short link to the current user's settings."""
    return redirect(url_for('profile.page'))


@bp.post('/workspaces')
def create():
    """Create a workspace; a bad handle or one too many is refused in the form (422)."""
    handle = request.form.get('handle', '')
    try:
        workspace = Workspace.provision(current_user._get_current_object(), handle,
                                   request.remote_addr)
    except Invalid as invalid:
        return _list_changed(422, form={'handle': handle}, errors=invalid.errors)
    except Refused as refused:
        return _list_changed(422, form={'handle': handle}, error=str(refused))
    flash(f'Workspace {workspace.handle} created.')
    return _list_changed(focus_id=workspace.id)


@bp.get('/workspaces/<workspace_id>')
def row(workspace_id):
    """One workspace's row, for htmx to put back when a delete is cancelled."""
    workspace = _own_workspace(workspace_id)
    if not is_htmx():
        return redirect(url_for('.index'))
    return render_fragment('home/_row.html', workspace=workspace, focus_id=workspace.id,
                           password=DatabasePassword.for_user(current_user.id),
                           user_handle=current_user.handle)


@bp.get('/workspaces/<workspace_id>/delete')
def confirm_delete(workspace_id):
    """Ask before deleting: in the row for htmx, as a page of its own without JavaScript."""
    workspace = _own_workspace(workspace_id)
    context = dict(workspace=workspace, user_handle=current_user.handle)
    if is_htmx():
        return render_fragment('home/_confirm_row.html', **context)
    response = make_response(render_template(
        'home/confirm_delete.html', title=f'Delete workspace {workspace.handle}', **context))
    response.vary.add('HX-Request')
    return response


@bp.post('/workspaces/<workspace_id>/delete')
def delete(workspace_id):
    """Delete a workspace for good."""
    workspace = _own_workspace(workspace_id)
    workspace.remove(request.remote_addr)
    flash(f'Workspace {workspace.handle} deleted.')
    return _list_changed(focus_create=True)


@bp.get('/workspaces/<workspace_id>/connection')
def connection(workspace_id):
    """The connection string with the password masked again (htmx's Hide password)."""
    workspace = _own_workspace(workspace_id)
    if not is_htmx():
        return redirect(url_for('.index'))
    return render_fragment('workspaces/_connection.html', workspace=workspace, focus=True,
                           password=DatabasePassword.for_user(current_user.id),
                           user_handle=current_user.handle)


@bp.post('/workspaces/<workspace_id>/connection')
def reveal(workspace_id):
    """Reveal the password in a connection string: in place for htmx, else on the home page."""
    # Rendered directly, never redirected, so the password goes in no URL, session or log.
    workspace = _own_workspace(workspace_id)
    if is_htmx():
        return render_fragment('workspaces/_connection.html', workspace=workspace,
                               revealed=True, password=DatabasePassword.for_user(current_user.id),
                               user_handle=current_user.handle)
    return _render_home(revealed_id=workspace.id)


@bp.post('/workspaces/<workspace_id>/connection/copy')
def copy(workspace_id):
    """The connection string with the password as plain text, for the Copy button's script."""
    # So the page never holds the password unless the person revealed it.
    workspace = _own_workspace(workspace_id)
    password = DatabasePassword.for_user(current_user.id)
    response = make_response(workspace.connection_string(password.password, current_user.handle))
    response.mimetype = 'text/plain'
    return response
