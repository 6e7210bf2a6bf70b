"""Workspaces are real databases: each is placed on a workspace server (workspace.server)
and keeps the role name it was last applied for (workspace.role); a propagation job brings
one user's role, password and databases on one server to what the metadata says, so it
names the user and the server rather than a workspace (and
outlives both a deleted workspace and a deleted account). Existing workspaces had no
database anywhere: they are left unplaced (server NULL) and pending (password_version 0);
a worker places them on start (workspaces.Workspace.place_unplaced). Jobs of the old shape
had only a stand-in to reach and are dropped."""
from peewee import CharField, Check, DateTimeField, IntegerField, Model, TextField


def up(migrator, db):
    class PropagationJob(Model):  # frozen copy of the model as this migration made it
        user_id = CharField()
        server = CharField()
        reason = CharField()
        status = CharField(constraints=[Check("status IN ('pending', 'applied')")])
        attempts = IntegerField(default=0)
        run_after = DateTimeField()
        locked_until = DateTimeField(null=True)
        last_error = TextField(null=True)
        created_at = DateTimeField()
        applied_at = DateTimeField(null=True)

        class Meta:
            database = db
            legacy_table_names = False
            indexes = ((('status', 'run_after'), False), (('user_id', 'server', 'status'), False))

    migrator.migrate(migrator.add_column('workspace', 'server', CharField(null=True)),
                     migrator.add_column('workspace', 'role', CharField(null=True)))
    db.execute_sql('UPDATE workspace SET password_version = 0, password_applied_at = NULL')
    db.drop_tables([PropagationJob])
    db.create_tables([PropagationJob])
