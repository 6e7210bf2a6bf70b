"""Accounts, preferences, browser sessions and the audit log."""
import datetime

from peewee import (
    BooleanField,
    CharField,
    DateTimeField,
    ForeignKeyField,
    IntegerField,
    Model,
    TextField,
)


def up(migrator, db):
    # Frozen copies of the models as they were when this migration was written.
    class Base(Model):
        class Meta:
            database = db
            legacy_table_names = False

    class User(Base):
        id = CharField(primary_key=True)
        email = CharField(unique=True)
        handle = CharField(unique=True)
        display_name = CharField(null=True)
        password_hash = CharField()
        status = CharField(default='accepted')
        created_at = DateTimeField(default=datetime.datetime.utcnow)
        updated_at = DateTimeField(null=True)
        version_id = IntegerField(default=1)

    class Preferences(Base):
        user = ForeignKeyField(User, primary_key=True, on_delete='CASCADE')
        community_updates = BooleanField(default=False)
        product_updates = BooleanField(default=True)
        tips_and_tricks = BooleanField(default=False)
        updated_at = DateTimeField(null=True)
        version_id = IntegerField(default=1)

    class Session(Base):
        id = CharField(primary_key=True)
        user = ForeignKeyField(User, on_delete='CASCADE')
        token_hash = CharField(unique=True)
        created_at = DateTimeField()
        last_seen_at = DateTimeField()
        ip = CharField(null=True)
        user_agent = CharField(null=True)

    class AuditRecord(Base):
        id = CharField(primary_key=True)
        identity = ForeignKeyField(User, on_delete='CASCADE')
        identity_handle = CharField()
        action_type = CharField()
        actor_id = CharField(null=True)
        actor_handle = CharField(null=True)
        actor_display_name = CharField(null=True)
        actor_ip = CharField(null=True)
        target_id = CharField(null=True)
        target_handle = CharField(null=True)
        data = TextField(default='{}')
        created_at = DateTimeField()

        class Meta:
            indexes = ((('identity', 'created_at', 'id'), False),)

    db.create_tables([User, Preferences, Session, AuditRecord])
