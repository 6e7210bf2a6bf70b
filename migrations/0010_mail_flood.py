"""The flood rule for System emails (mail.py): each address's count in its hour
(flood_window), and the summary that holds a message back (email.summary_id)."""
from peewee import CharField, DateTimeField, IntegerField, Model


def up(migrator, db):
    # A frozen copy of the model as this migration made it.
    class FloodWindow(Model):
        address = CharField(primary_key=True)
        started_at = DateTimeField()
        sent = IntegerField(default=0)
        summary_id = CharField(null=True)

        class Meta:
            database = db
            legacy_table_names = False

    db.create_tables([FloodWindow])
    migrator.migrate(migrator.add_column('email', 'summary_id', CharField(null=True)),
                     migrator.add_index('email', ('summary_id',)))
