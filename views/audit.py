"""Settings → Audit Log: the account's activity, newest first, with filter and exports."""
import collections
import csv
import io
import json

from flask import Response, render_template, request, stream_with_context
from flask_login import current_user
from markupsafe import Markup

from models import AUDIT_ACTIONS, AuditRecord, Preferences, utcnow
from views import audit_json, decode_cursor, encode_cursor, respond, settings_blueprint

bp = settings_blueprint('audit', __name__, 'Audit Log', 5)

PAGE_SIZE = 50
EXPORT_BATCH = 500
EXPORT_FIELDS = ('id', 'action_type', 'actor_id', 'actor_handle', 'actor_display_name',
                 'actor_avatar_url', 'actor_ip', 'identity_id', 'identity_handle',
                 'target_id', 'target_handle', 'data', 'created_at')
ACTION_TYPES = [(action.name, action.label) for action in AUDIT_ACTIONS.values()]
# The parts of the panel that htmx asks for by their element id (see page).
PARTS = {'audit-rows': 'audit/_next.html', 'audit-log': 'audit/_log.html'}
# The audit data of a Notifications switch is this prefix and its name (models.Preferences).
SWITCH = 'communication_'


@bp.get('/audit')
def page():
    """Show one page of the log (after ?after=, of ?action_type=) as a page or a fragment.

    htmx asks for the entries after a cursor (Load more, target #audit-rows) or for the whole
    log of a filter (target #audit-log); anything else gets the panel."""
    action_type = request.args.get('action_type', '')
    if action_type not in AUDIT_ACTIONS:
        action_type = ''
    token = request.args.get('after')
    after = decode_cursor(token) if token else None
    if token and after is None:
        return render_template('error.html', title='Link out of date',
                               message='This Load more link is not valid. '
                                       'Open the Audit Log again to start from the newest '
                                       'records.'), 400
    records, cursor = AuditRecord.page(current_user.id, PAGE_SIZE, after, action_type or None)
    return respond(targets=PARTS, rows=_rows(records),
                   next_cursor=encode_cursor(cursor) if cursor else None,
                   action_type=action_type,
                   action_label=action_type and AUDIT_ACTIONS[action_type].label,
                   action_types=ACTION_TYPES, after=token)


@bp.get('/audit/export.<any(csv, jsonl):kind>')
def export(kind):
    """Download the whole log as CSV or JSON Lines, streamed in keyset batches."""
    batches = _batches(current_user.id)
    if kind == 'csv':
        body, mimetype = _csv_lines(batches), 'text/csv'
    else:
        body, mimetype = _jsonl_lines(batches), 'application/jsonl'
    filename = f'penstock-audit-log-{current_user.handle}-{utcnow():%Y%m%d}.{kind}'
    response = Response(stream_with_context(body), mimetype=mimetype)
    response.headers['Content-Disposition'] = f'attachment; filename="{filename}"'
    response.headers['Cache-Control'] = 'no-store'
    return response


def _batches(user_id):
    """Every record of the account, newest first, in lists of EXPORT_BATCH (keyset, no OFFSET)."""
    cursor = None
    while True:
        records, cursor = AuditRecord.page(user_id, EXPORT_BATCH, cursor)
        yield records
        if cursor is None:
            return


def _items(batches):
    """Each record as the API shows it (SPEC's field names), one actor query per batch."""
    for records in batches:
        actors = AuditRecord.actors(records)
        for record in records:
            yield audit_json(record, actors)


def _jsonl_lines(batches):
    for item in _items(batches):
        yield json.dumps(item, ensure_ascii=False) + '\n'


def _csv_lines(batches):
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(EXPORT_FIELDS)
    yield buffer.getvalue()
    for item in _items(batches):
        buffer.seek(0)
        buffer.truncate()
        item['data'] = json.dumps(item['data'], sort_keys=True, ensure_ascii=False)
        writer.writerow(_spreadsheet_safe(item.get(field)) for field in EXPORT_FIELDS)
        yield buffer.getvalue()


def _spreadsheet_safe(value):
    """A cell a spreadsheet will not run as a formula (a display name may start with '=')."""
    if value is None:
        return ''
    if isinstance(value, str) and value[:1] in ('=', '+', '-', '@', '\t', '\r'):
        return "'" + value
    return value


def _rows(records):
    """What each entry shows: the record, its actor, its data and its details."""
    actors = AuditRecord.actors(records)
    rows = []
    for record in records:
        data = json.loads(record.data)
        rows.append({'record': record, 'actor': actors.get(record.actor_id), 'data': data,
                     'details': _details(record.action_type, data)})
    return rows


# The words the console's pages use for what a record's data holds; a key not listed here
# is shown as its name in words. The switches are named as the Notifications page names them.
LABELS = {
    'display_name': 'Display Name', 'handle': 'Handle', 'status': 'Status',
    'session_id': 'Session ID', 'token_id': 'Token ID', 'last4': 'Token',
    'workspace_id': 'Workspace ID', 'version': 'Password version',
    'workspaces': 'Workspaces', 'sessions': 'Sessions ended', 'tokens': 'Tokens revoked',
    'temporary_tokens': 'CLI logins revoked', 'login_request_id': 'Login request ID',
    'requested_from': 'CLI asked from', 'temporary_token_id': 'CLI login token ID',
    'kind': 'Email', 'code': 'Mail server answered', 'via': 'Changed with',
    'role': 'Database role', 'end_connections': 'Open connections ended',
    **{SWITCH + name: label for name, label, _ in Preferences.CHOICES},
}
# A key whose label depends on the action, as (action_type, key).
ACTION_LABELS = {('workspace.create', 'handle'): 'Workspace handle',
                 ('workspace.delete', 'handle'): 'Workspace handle',
                 ('user.password.drift', 'workspaces'): 'Workspaces on that server'}
# Values the console shows in other words: a token's status as the Tokens page does, a
# switch's as On or Off, how a change was made.
WORDS = {'status': {'active': 'Active', 'inactive': 'Inactive'},
         'via': {'email': 'The unsubscribe link in an email'},
         **{SWITCH + name: {'enabled': 'On', 'disabled': 'Off'}
            for name, _, _ in Preferences.CHOICES}}
# What each System email (mail.SYSTEM_EMAILS, mail.SUMMARY) or announcement is about, for
# email.failed.
EMAILS = {'token.create': 'an email about a new token',
          'user.password.rotate': 'an email about the rotated database password',
          'user.handle.change': 'an email about the changed handle',
          'user.authentication.reset': 'an email about the authentication reset',
          'login_token.confirm': 'an email about a verified CLI login',
          'user.delete': 'an email about the deleted account',
          'system.summary': 'an email listing the notices held back in a flood of them',
          'user.email.verify': 'the email that verifies their address',
          'user.email.update': 'an email about changing their address',
          'user.password.drift': 'an email about a database password put back',
          'announcement': 'an announcement'}
# Values shown as code: ids and the token's last characters, which may wrap anywhere.
CODE = {'last4', 'session_id', 'token_id', 'workspace_id', 'login_request_id',
        'temporary_token_id'}


def _details(action_type, data):
    """A record's data as (label, value, is_code) in the console's words, by label."""
    details = []
    for key, value in data.items():
        label = ACTION_LABELS.get((action_type, key)) or LABELS.get(key) \
            or key.replace('_', ' ').capitalize()
        if key == 'last4':
            value = f'pst_…{value}'
        elif key == 'kind':
            value = _capitalized(EMAILS.get(value, value))
        else:
            value = _readable(value, WORDS.get(key, {}))
        details.append((label, value, key in CODE))
    return sorted(details)


def _capitalized(text):
    return text[:1].upper() + text[1:]


def _readable(value, words):
    if isinstance(value, dict) and set(value) == {'old', 'new'}:
        return f'{_readable(value["old"], words)} → {_readable(value["new"], words)}'
    if value is None or value == '':
        return '(none)'
    if isinstance(value, bool):
        return 'Yes' if value else 'No'
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return words.get(value, str(value))


def _worded(data):
    """What a sentence says in words from a record's data (see models.AuditAction)."""
    values = collections.defaultdict(str, data)
    values['token'] = Markup('token <code>pst_…{}</code>').format(data.get('last4', ''))
    on = [label for name, label, _ in Preferences.CHOICES if data.get(SWITCH + name) == 'enabled']
    off = [label for name, label, _ in Preferences.CHOICES
           if data.get(SWITCH + name) == 'disabled']
    values['turned'] = ', and '.join(f'{word} {" and ".join(labels)} emails'
                                     for word, labels in (('on', on), ('off', off)) if labels)
    if data.get('via') == 'email':
        values['unsubscribed'] = ' and '.join(off)
    values['email'] = EMAILS.get(data.get('kind'), 'an email')
    return values


@bp.app_template_global()
def audit_sentence(action_type, data):
    """What a record says its actor did, after their name: its action's sentence
    (models.AUDIT_ACTIONS) filled in from its data, which is escaped; a token is named as code."""
    action = AUDIT_ACTIONS.get(action_type)
    if action is not None:
        values = _worded(data)
        try:
            return Markup(action.says(values)).format_map(values)
        except (LookupError, TypeError, ValueError):  # data without what its sentence names
            pass
    return Markup('did <code>{}</code>').format(action_type)
