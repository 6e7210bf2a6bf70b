"""The console home: the user's workspaces, created and deleted there, with their connection
strings (password masked, revealed or copied on request); and short links into Settings."""
from flask import Blueprint, abort, make_response, redirect, request, url_for
from flask_login import current_user

from models import Config, Invalid, Refused
from views import login_manager, page_of, panel_context, recent_login_required, respond
from workspaces import WORKSPACE_HANDLE_RULES, WORKSPACE_LIMIT, DatabasePassword, Workspace

bp = Blueprint('home', __name__)
page_of(bp, 'home/page.html', 'home/_panel.html', 'Workspaces')


@bp.before_request
def require_login():
    """Everything here is the logged-in user's own."""
    if not current_user.is_authenticated:
        return login_manager.unauthorized()


@panel_context(bp)
def _home_context(context):
    """Fill in what the home panel and its list need and `context` lacks: the workspaces, the
    password that goes in their connection strings (made on first use, so only when there
    is a workspace), and whether one more fits."""
    if 'workspaces' not in context:
        context['workspaces'] = Workspace.for_user(current_user.id)
    workspaces = context['workspaces']
    if 'password' not in context:
        context['password'] = DatabasePassword.for_user(current_user.id) if workspaces else None
    context.setdefault('form', {})
    context.update(user_handle=current_user.handle, full=len(workspaces) >= WORKSPACE_LIMIT,
                   limit=WORKSPACE_LIMIT, rules=WORKSPACE_HANDLE_RULES,
                   limit_reason=Workspace.LIMIT_REACHED, tenant=Config.workspace_servers.limits)
    return context


def _list_changed(status=200, said=None, **context):
    """After a change to the list: htmx gets the list, the create form and the flash
    messages; without JavaScript a refusal is the page with the form's error, else a GET."""
    return respond('home/_list.html', status, oob=['home/_create.html'], said=said,
                   then='.index', **_home_context(context))


def _own_workspace(workspace_id):
    """The current user's workspace with this id; anyone else's, or none, is a 404."""
    workspace = Workspace.of(current_user.id, workspace_id)
    if workspace is None:
        abort(404)
    return workspace


@bp.get('/')
def index():
    """The console home: the user's workspaces and the form to create one."""
    return respond()


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
    return _list_changed(said=f'Workspace {workspace.handle} created.', focus_id=workspace.id)


@bp.get('/workspaces/<workspace_id>')
def row(workspace_id):
    """One workspace's row, for htmx to put back when a delete is cancelled."""
    workspace = _own_workspace(workspace_id)
    return respond('home/_row.html', then='.index', workspace=workspace,
                   focus_id=workspace.id, password=DatabasePassword.for_user(current_user.id),
                   user_handle=current_user.handle)


@bp.get('/workspaces/<workspace_id>/status')
def status(workspace_id):
    """Whether the workspace's database exists yet, for the row's polling."""
    return respond('home/_status.html', then='.index', workspace=_own_workspace(workspace_id))


@bp.get('/workspaces/<workspace_id>/delete')
@recent_login_required  # asked before the question, so the password page leads back to it
def confirm_delete(workspace_id):
    """Ask before deleting: in the row for htmx, as a page of its own without JavaScript."""
    workspace = _own_workspace(workspace_id)
    return respond('home/_confirm_row.html', panel='home/_confirm_panel.html',
                   title=f'Delete workspace {workspace.handle}', workspace=workspace,
                   user_handle=current_user.handle)


@bp.post('/workspaces/<workspace_id>/delete')
@recent_login_required  # it drops the database and everything in it
def delete(workspace_id):
    """Delete a workspace for good (with a recent password, like the other dangerous
    actions)."""
    workspace = _own_workspace(workspace_id)
    workspace.remove(request.remote_addr)
    return _list_changed(said=f'Workspace {workspace.handle} deleted.', focus_create=True)


CONNECTION = 'home/_connection.html'


def hide_connection(workspace_id, then):
    """The connection string with the password masked again: htmx's Hide password; without
    htmx, a way back to `then` (where the string was revealed)."""
    workspace = _own_workspace(workspace_id)
    return respond(CONNECTION, then=then, workspace=workspace, focus='reveal',
                   password=DatabasePassword.for_user(current_user.id),
                   user_handle=current_user.handle, area=request.blueprint)


def reveal_connection(workspace_id):
    """Reveal the password in a connection string: in place for htmx, else the whole page of
    the area asked (`request.blueprint`: home or Profile) with that one string revealed."""
    # Rendered directly, never redirected, so the password goes in no URL, session or log.
    workspace = _own_workspace(workspace_id)
    return respond(CONNECTION, workspace=workspace, revealed=True, revealed_id=workspace.id,
                   password=DatabasePassword.for_user(current_user.id),
                   user_handle=current_user.handle, area=request.blueprint)


@bp.get('/workspaces/<workspace_id>/connection')
def connection(workspace_id):
    """The connection string with the password masked again (htmx's Hide password)."""
    return hide_connection(workspace_id, then=f'.index#connection-{workspace_id}')


@bp.post('/workspaces/<workspace_id>/connection')
def reveal(workspace_id):
    """Reveal the password in a connection string: in place for htmx, else on the home page."""
    return reveal_connection(workspace_id)


@bp.post('/workspaces/<workspace_id>/connection/copy')
def copy(workspace_id):
    """The connection string with the password as plain text, for the Copy button's script."""
    # So the page never holds the password unless the person revealed it.
    workspace = _own_workspace(workspace_id)
    password = DatabasePassword.for_user(current_user.id)
    response = make_response(workspace.connection_string(password.password, current_user.handle))
    response.mimetype = 'text/plain'
    return response
