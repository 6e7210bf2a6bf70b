"""Workspaces, the database password and its propagation jobs, handle holds, and when a
session last proved its password."""
from peewee import CharField, Check, DateTimeField, ForeignKeyField, IntegerField, Model, TextField


def up(migrator, db):
    # Frozen copies of the models as they were when this migration was written.
    class Base(Model):
        class Meta:
            database = db
            legacy_table_names = False

    class User(Base):
        id = CharField(primary_key=True)

    class Workspace(Base):
        id = CharField(primary_key=True)
        user = ForeignKeyField(User, on_delete='CASCADE')
        handle = CharField()
        database_name = CharField(unique=True)
        password_version = IntegerField(default=0)
        password_applied_at = DateTimeField(null=True)
        created_at = DateTimeField()
        updated_at = DateTimeField(null=True)
        version_id = IntegerField(default=1)

        class Meta:
            indexes = ((('user', 'handle'), True),)

    class DatabasePassword(Base):
        user = ForeignKeyField(User, primary_key=True, on_delete='CASCADE')
        id = CharField(unique=True)
        ciphertext = TextField()
        version = IntegerField()
        created_at = DateTimeField()

    class PropagationJob(Base):
        user = ForeignKeyField(User, on_delete='CASCADE')
        workspace = ForeignKeyField(Workspace, on_delete='CASCADE')
        password_version = IntegerField()
        status = CharField(constraints=[Check("status IN ('pending', 'applied')")])
        attempts = IntegerField(default=0)
        run_after = DateTimeField()
        locked_until = DateTimeField(null=True)
        last_error = TextField(null=True)
        created_at = DateTimeField()
        applied_at = DateTimeField(null=True)

        class Meta:
            indexes = ((('status', 'run_after'), False),)

    class HandleHold(Base):
        handle = CharField(primary_key=True)
        user = ForeignKeyField(User, null=True, on_delete='SET NULL')
        released_at = DateTimeField()
        until = DateTimeField(index=True)

    # Users' database passwords are made on first use (models.DatabasePassword.for_user).
    migrator.migrate(migrator.add_column('session', 'authenticated_at',
                                         DateTimeField(null=True)))
    db.create_tables([Workspace, DatabasePassword, PropagationJob, HandleHold])
