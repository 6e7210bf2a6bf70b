"""What Penstock set on each workspace server, so a worker can tell a password a tenant set
from inside a workspace from its own: the SCRAM verifier it last set for each user's role on
each server (role_verifier), and when each server was last checked and which worker holds
it now (server_check, a lease). A propagation job may also end the role's open connections
(propagation_job.end_connections: Reset authentication, or Rotate Password with Also end
open connections). Roles made before this migration have no verifier on record: the first
check queues a job that sets one (the same password, so nothing changes for the user)."""
from peewee import (BooleanField, CharField, CompositeKey, DateTimeField, IntegerField, Model,
                    TextField)


def up(migrator, db):
    # Frozen copies of the models as this migration made them.
    class Base(Model):
        class Meta:
            database = db
            legacy_table_names = False

    class RoleVerifier(Base):
        user_id = CharField()
        server = CharField()
        role = CharField()
        version = IntegerField()
        verifier = TextField()
        set_at = DateTimeField()

        class Meta:
            primary_key = CompositeKey('server', 'user_id')

    class ServerCheck(Base):
        server = CharField(primary_key=True)
        locked_until = DateTimeField(null=True)
        checked_at = DateTimeField(null=True)

    db.create_tables([RoleVerifier, ServerCheck])
    migrator.migrate(migrator.add_column('propagation_job', 'end_connections',
                                         BooleanField(default=False)))
