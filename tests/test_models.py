"""The database: migrations, ids, and everything of a user going with the user."""
import os
import re
import stat

import pytest
from peewee import TextField
from playhouse.migrations import Runner
from playhouse.shortcuts import model_to_dict

import credentials
import database
import imaging
import models
import workspaces
from app import create_app
from tests.conftest import TEST_PASSWORD_KEY, sqlite_only
from tests.helpers import every_model, log_in, logged_in_as, make_user, run_jobs


def test_migrations_create_every_table_and_rerun_as_a_no_op(make_database_url):
    fresh = database.open_database(make_database_url('fresh', empty=True))
    assert database.migrate(fresh) == ['0001_initial', '0002_tokens', '0003_avatars',
                                       '0004_workspaces', '0005_session_user_agent_text',
                                       '0006_real_workspaces', '0007_email',
                                       '0008_role_verifiers', '0009_verified_email',
                                       '0010_mail_flood']
    tables = set(fresh.get_tables())
    assert {'user', 'preferences', 'session', 'audit_record', 'schema_migration', 'token',
            'temporary_token', 'login_request', 'avatar', 'avatar_upload', 'workspace',
            'database_password', 'propagation_job', 'handle_hold', 'email',
            'announcement', 'flood_window', 'role_verifier', 'server_check'} <= tables
    # Every model's columns are in the migrated schema, so no migration was forgotten.
    for model in every_model():
        columns = {c.name for c in fresh.get_columns(model._meta.table_name)}
        assert set(model._meta.columns) <= columns, model.__name__
    # ...and a column the model keeps as unbounded text is text there (PostgreSQL refuses
    # more than 255 characters in a varchar(255)).
    for model in every_model():
        types = {c.name: c.data_type.lower() for c in
                 fresh.get_columns(model._meta.table_name)}
        for name, field in model._meta.columns.items():
            if isinstance(field, TextField):
                assert types[name] == 'text', (model.__name__, name, types[name])
    assert database.migrate(fresh) == []
    fresh.close()


def test_a_database_from_an_earlier_version_upgrades_in_place(make_database_url):
    """A user of 0001; a workspace and a propagation job of 0004, when a workspace was a
    row and a job named it: after 0006 the workspace is unplaced and pending, the job gone,
    and a worker's start places it and has its database made."""
    url = make_database_url('old', empty=True)
    keys = {'DATABASE_PASSWORD_KEYS': TEST_PASSWORD_KEY}
    create_app({'SECRET_KEY': 'x', 'DATABASE_URL': url, **keys})
    runner = Runner(database.db.obj, database.MIGRATIONS)
    runner.up(target='0001_initial')
    now = models.utcnow()
    with database.db.connection_context():
        # The User model of today has columns the old table lacks: insert as 0001 would.
        insert('user', id='u_old', email='old@example.com', handle='old', password_hash='x',
               status='accepted', created_at=now, version_id=1)
    assert runner.up(target='0005_session_user_agent_text') == [
        '0002_tokens', '0003_avatars', '0004_workspaces', '0005_session_user_agent_text']
    with database.db.connection_context():
        insert('workspace', id='w_old', user_id='u_old', handle='legacy',
               database_name='legacy00', password_version=1, password_applied_at=now,
               created_at=now, version_id=1)
        insert('propagation_job', user_id='u_old', workspace_id='w_old', password_version=1,
               status='pending', attempts=0, run_after=now, created_at=now)
    database.db.close()
    app = create_app({'SECRET_KEY': 'x', 'DATABASE_URL': url, **keys})
    assert database.migrate(database.db.obj) == ['0006_real_workspaces', '0007_email',
                                                 '0008_role_verifiers', '0009_verified_email',
                                                 '0010_mail_flood']
    with database.db.connection_context():
        user = models.User.get()
        assert (user.handle, user.avatar_version) == ('old', 1)
        assert workspaces.DatabasePassword.for_user(user).version == 1  # made when first needed
        legacy = workspaces.Workspace.get_by_id('w_old')
        assert (legacy.server, legacy.password_version, legacy.password_applied_at) == (
            None, 0, None)
        assert legacy.password_state(1, 'old') == 'pending'
        assert workspaces.PropagationJob.select().count() == 0  # of the old shape: dropped
        assert workspaces.Workspace.place_unplaced() == 1
        assert workspaces.Workspace.place_unplaced() == 0
        [server] = models.Config.workspace_servers
        assert workspaces.Workspace.get_by_id('w_old').server == server.key
        assert [(job.user_id, job.server, job.reason, job.status) for job in
                workspaces.PropagationJob.select()] == [
            ('u_old', server.key, 'workspace.create', 'pending')]
    run_jobs()
    with database.db.connection_context():
        legacy = workspaces.Workspace.get_by_id('w_old')
        assert legacy.password_state(1, 'old') == 'applied'
        password = workspaces.DatabasePassword.for_user(user).password
        assert logged_in_as(legacy.connection_string(password)) == ('old', 'legacy00')
        workspace = workspaces.Workspace.provision(user, 'prod')
        assert workspace.host() == 'old-prod.workspaces.penstock.test'
        token, _ = credentials.Token.issue(user)
        assert token.user.handle == 'old'
        assert models.Avatar.select().count() == 0
    response = app.test_client().get('/avatars/u_old/1/460.webp')
    assert response.status_code == 200 and response.content_type == 'image/webp'
    with database.db.connection_context():
        avatar = models.Avatar.get(models.Avatar.user == 'u_old')  # made when first shown
        assert response.get_data() == imaging.generated(avatar.seed)[0]
    assert database.migrate(database.db.obj) == []
    database.db.close()


def insert(table, **columns):
    """A row written as the migrations of its time left the table (today's models may have
    other columns)."""
    database.db.execute_sql(
        f'INSERT INTO "{table}" ({", ".join(columns)}) VALUES ('
        + ', '.join([database.db.obj.param] * len(columns)) + ')', tuple(columns.values()))


@sqlite_only
def test_the_sqlite_database_and_its_wal_files_are_private(make_database_url):
    umask = os.umask(0o022)  # the usual one, under which files are made world-readable
    try:
        url = make_database_url('private', empty=True)
        create_app({'SECRET_KEY': 'x', 'DATABASE_URL': url,
                    'DATABASE_PASSWORD_KEYS': TEST_PASSWORD_KEY})
        database.migrate(database.db.obj)
        with database.db.connection_context():
            make_user()  # a write: the -wal and -shm files are in use
            path = database.db.obj.database
            modes = {suffix: stat.S_IMODE(os.stat(path + suffix).st_mode)
                     for suffix in ('', '-wal', '-shm', '-writer')}
    finally:
        os.umask(umask)
        database.db.close()
    assert modes == {'': 0o600, '-wal': 0o600, '-shm': 0o600, '-writer': 0o600}


@sqlite_only
def test_sqlite_runs_with_wal_foreign_keys_and_a_busy_timeout(app):
    with database.db.connection_context():
        assert database.db.execute_sql('PRAGMA journal_mode').fetchone()[0] == 'wal'
        assert database.db.execute_sql('PRAGMA foreign_keys').fetchone()[0] == 1
        assert database.db.execute_sql('PRAGMA busy_timeout').fetchone()[0] == 5000


def test_ids_are_prefixed_random_base32():
    ids = {models.new_id('u') for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r'u_[0-9a-v]{20}', i) for i in ids)


def columns(row):
    """Every column of `row` as Peewee's public model_to_dict reads it (a foreign key's id)."""
    return model_to_dict(row, recurse=False)


def test_fetch_reads_what_peewee_reads_and_none_when_there_is_nothing(app, user, other_user):
    with database.db.connection_context():
        for model, field, value in ((models.User, models.User.id, user.id),
                                    (models.User, models.User.handle, 'bob'),
                                    (models.Preferences, models.Preferences.user, user.id),
                                    (models.Avatar, models.Avatar.user, user)):
            fetched = model.prepared_get(field, value)
            assert columns(fetched) == columns(model.get(field == value)), model.__name__
        assert models.User.prepared_get(models.User.handle, 'nobody') is None
        with database.write_transaction():
            locked = models.Preferences.prepared_get(models.Preferences.user, user.id, lock=True)
        assert columns(locked) == columns(models.Preferences.for_user(user.id))


def test_fetch_with_join_brings_the_row_it_points_to(app, client, logged_in):
    with database.db.connection_context():
        Session = credentials.Session
        stored = Session.get()
        session = Session.prepared_get(Session.token_hash, stored.token_hash, join=Session.user)
        assert columns(session) == columns(stored)
        assert columns(session.user) == columns(models.User.get_by_id(logged_in.id))
        models.User.delete().where(models.User.id == logged_in.id).execute()
        assert Session.prepared_get(Session.token_hash, stored.token_hash,
                                    join=Session.user) is None


def test_add_inserts_as_create_does_and_store_writes_every_column(app, user):
    with database.db.connection_context():
        record = models.AuditRecord.prepared_create(identity=user, identity_handle=user.handle,
                                                    action_type='test.action', actor_ip=None)
        assert re.fullmatch(r'a_[0-9a-v]{20}', record.id) and record.data == '{}'
        assert columns(models.AuditRecord.get_by_id(record.id)) == columns(record)
        with database.write_transaction():
            preferences = models.Preferences.prepared_get(models.Preferences.user, user.id,
                                                          lock=True)
            preferences.tips_and_tricks, preferences.version_id = True, 7
            preferences.updated_at = models.utcnow()
            preferences.prepared_save()
        assert columns(models.Preferences.for_user(user.id)) == columns(preferences)


def test_prepared_sql_refuses_parameters_in_another_order(app):
    with pytest.raises(RuntimeError, match='not in the order'):
        database._prepared(('test-order',), lambda: ('SELECT ?, ?', [1, 2]), [2, 1])
    assert database._prepared(('test-order',), lambda: ('SELECT ?, ?', [1, 2]), [1, 2]) == (
        'SELECT ?, ?')


def test_everything_about_a_user_goes_with_the_user(app, user, other_user):
    client = app.test_client()
    log_in(client, 'alice')
    log_in(app.test_client(), 'bob')

    def counts():
        with database.db.connection_context():
            return {m.__name__: m.select().count()
                    for m in (models.User, models.Preferences, credentials.Session,
                              models.AuditRecord, models.Avatar)}

    before = counts()
    assert before == {'User': 2, 'Preferences': 2, 'Session': 2, 'AuditRecord': 4, 'Avatar': 2}
    with database.db.connection_context():
        models.User.get(models.User.handle == 'alice').delete_instance()
    assert counts() == {'User': 1, 'Preferences': 1, 'Session': 1, 'AuditRecord': 2,
                        'Avatar': 1}


def test_the_demo_command_creates_the_demo_user_only_in_an_empty_database(app):
    runner = app.test_cli_runner()
    result = runner.invoke(args=['demo'])
    assert 'Demo login: demo@penstock.test (or demo) / password penstock-demo' in result.output
    runner.invoke(args=['demo'])
    with database.db.connection_context():
        assert models.User.select().count() == 1
        demo = models.User.get()
        assert demo.display_name == 'Demo User'
        assert [w.handle for w in workspaces.Workspace.for_user(demo)] == ['analytics', 'staging']
    client = app.test_client()
    assert log_in(client, 'demo', 'penstock-demo').status_code == 302


def test_the_demo_command_leaves_a_database_with_users_alone_and_says_so(app, user):
    result = app.test_cli_runner().invoke(args=['demo'])
    assert result.exit_code == 0
    assert result.output == ('No demo user was made: the database has users already. Log in '
                             'as one of them, or sign up.\n')
    with database.db.connection_context():
        assert models.User.select().count() == 1


def test_after_the_demo_account_is_deleted_the_demo_command_makes_one_that_logs_in(app):
    """The deleted account's handle is held: `make run` (which runs this) must start anyway."""
    runner = app.test_cli_runner()
    runner.invoke(args=['demo'])
    with database.db.connection_context():
        demo = models.User.get(models.User.handle == 'demo')
    _, secret = credentials.Token.issue(demo)
    deleted = app.test_client().delete('/api/v0/user/demo', json={'password': 'penstock-demo'},
                                       headers={'Authorization': f'Bearer {secret}'})
    assert deleted.status_code == 200

    result = runner.invoke(args=['demo'])
    assert result.exit_code == 0, result.output
    assert result.output == 'Demo login: demo@penstock.test (or demo2) / password penstock-demo\n'
    assert log_in(app.test_client(), 'demo2', 'penstock-demo').status_code == 302
    assert log_in(app.test_client(), 'demo@penstock.test', 'penstock-demo').status_code == 302
    with database.db.connection_context():
        again = models.User.get(models.User.handle == 'demo2')
        assert [w.handle for w in workspaces.Workspace.for_user(again)] == ['analytics', 'staging']


def test_when_every_demo_handle_is_held_the_demo_command_says_none_was_made(app):
    with database.db.connection_context():
        for handle in ['demo'] + [f'demo{n}' for n in range(2, 10)]:
            models.HandleHold.hold(handle, None, models.utcnow())
    result = app.test_cli_runner().invoke(args=['demo'])
    assert result.exit_code == 0
    assert result.output.startswith('No demo user was made: the handles demo to demo9 are all '
                                    'held')
    with database.db.connection_context():
        assert models.User.select().count() == 0


def test_the_migrate_command_reports_what_it_did(make_database_url):
    app = create_app({'SECRET_KEY': 'x', 'DATABASE_URL': make_database_url('cli', empty=True),
                      'DATABASE_PASSWORD_KEYS': TEST_PASSWORD_KEY})
    runner = app.test_cli_runner()
    assert ('Applied migrations: 0001_initial, 0002_tokens, 0003_avatars, 0004_workspaces, '
            '0005_session_user_agent_text' in runner.invoke(args=['migrate']).output)
    assert 'The database is up to date.' in runner.invoke(args=['migrate']).output
    database.db.close()


def test_reencrypt_passwords_moves_every_password_to_the_first_key(make_database_url):
    from cryptography.fernet import Fernet
    new_key = Fernet.generate_key().decode()
    url = make_database_url('keys')
    create_app({'SECRET_KEY': 'x', 'DATABASE_URL': url,
                'DATABASE_PASSWORD_KEYS': TEST_PASSWORD_KEY})
    database.migrate(database.db.obj)
    alice = make_user()
    with database.db.connection_context():
        password = workspaces.DatabasePassword.for_user(alice).password
    database.db.close()
    app = create_app({'SECRET_KEY': 'x', 'DATABASE_URL': url,
                      'DATABASE_PASSWORD_KEYS': f'{new_key}, {TEST_PASSWORD_KEY}'})
    result = app.test_cli_runner().invoke(args=['reencrypt-passwords'])
    assert result.output == 'Re-encrypted 1 database password with the first key.\n'
    database.use_keys([new_key])  # the old key retired
    with database.db.connection_context():
        assert workspaces.DatabasePassword.for_user(alice).password == password
    database.db.close()
