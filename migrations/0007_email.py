"""Email: the outbox (email), announcements (announcement), and when mail to an account's
address last failed for good (user.email_undeliverable_at)."""
from peewee import CharField, Check, DateTimeField, IntegerField, Model, TextField


def up(migrator, db):
    # Frozen copies of the models as this migration made them.
    class Base(Model):
        class Meta:
            database = db
            legacy_table_names = False

    class Email(Base):
        id = CharField(primary_key=True)
        kind = CharField()
        user_id = CharField(null=True, index=True)
        to_address = CharField()
        data = TextField(default='{}')
        announcement_id = CharField(null=True)
        status = CharField(constraints=[Check("status IN ('pending', 'sent', 'failed')")])
        attempts = IntegerField(default=0)
        run_after = DateTimeField()
        locked_until = DateTimeField(null=True)
        last_error = TextField(null=True)
        created_at = DateTimeField()
        sent_at = DateTimeField(null=True)

        class Meta:
            indexes = ((('status', 'run_after'), False), (('announcement_id', 'user_id'), True))

    class Announcement(Base):
        id = CharField(primary_key=True)
        topic = CharField()
        subject = TextField()
        body = TextField()
        created_at = DateTimeField()
        queued = IntegerField(default=0)

    db.create_tables([Email, Announcement])
    migrator.migrate(migrator.add_column('user', 'email_undeliverable_at',
                                         DateTimeField(null=True)))
