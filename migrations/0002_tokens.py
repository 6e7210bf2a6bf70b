"""API tokens (two slots per user), temporary tokens and CLI login requests."""
from peewee import CharField, Check, DateTimeField, ForeignKeyField, IntegerField, Model


def up(migrator, db):
    # Frozen copies of the models as they were when this migration was written.
    class Base(Model):
        class Meta:
            database = db
            legacy_table_names = False

    class User(Base):
        id = CharField(primary_key=True)

    class Token(Base):
        id = CharField(primary_key=True)
        user = ForeignKeyField(User, on_delete='CASCADE')
        slot = IntegerField(constraints=[Check('slot BETWEEN 1 AND 2')])
        token_hash = CharField(unique=True)
        last4 = CharField()
        status = CharField(constraints=[Check("status IN ('active', 'inactive')")])
        created_at = DateTimeField()
        updated_at = DateTimeField(null=True)
        last_used_at = DateTimeField(null=True)
        version_id = IntegerField(default=1)

        class Meta:
            indexes = ((('user', 'slot'), True),)

    class TemporaryToken(Base):
        id = CharField(primary_key=True)
        user = ForeignKeyField(User, on_delete='CASCADE')
        token_hash = CharField(unique=True)
        created_at = DateTimeField()
        expires_at = DateTimeField()
        last_used_at = DateTimeField(null=True)

    class LoginRequest(Base):
        id = CharField(primary_key=True)
        ip = CharField(null=True)
        created_at = DateTimeField()
        expires_at = DateTimeField()
        status = CharField(constraints=[
            Check("status IN ('pending', 'confirmed', 'used', 'failed')")])
        user = ForeignKeyField(User, null=True, on_delete='CASCADE')
        code_hash = CharField(null=True)
        attempts = IntegerField(default=0)

    db.create_tables([Token, TemporaryToken, LoginRequest])
