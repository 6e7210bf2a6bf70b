"""Avatars: each user's default and custom images, and pending uploads for the crop step."""
from peewee import BlobField, CharField, Check, DateTimeField, ForeignKeyField, IntegerField, Model


def up(migrator, db):
    # Frozen copies of the models as they were when this migration was written.
    class Base(Model):
        class Meta:
            database = db
            legacy_table_names = False

    class User(Base):
        id = CharField(primary_key=True)

    class Avatar(Base):
        user = ForeignKeyField(User, primary_key=True, on_delete='CASCADE')
        seed = CharField()
        default_source = CharField(constraints=[
            Check("default_source IN ('generated', 'gravatar')")])
        default_large = BlobField(null=True)
        default_small = BlobField(null=True)
        custom_large = BlobField(null=True)
        custom_small = BlobField(null=True)
        updated_at = DateTimeField()

    class AvatarUpload(Base):
        id = CharField(primary_key=True)
        user = ForeignKeyField(User, on_delete='CASCADE')
        original = BlobField()
        preview = BlobField()
        width = IntegerField()
        height = IntegerField()
        preview_width = IntegerField()
        preview_height = IntegerField()
        created_at = DateTimeField()
        expires_at = DateTimeField(index=True)

    # Existing users get their Avatar row, and a generated default, when first shown.
    migrator.migrate(migrator.add_column('user', 'avatar_version', IntegerField(default=1)))
    db.create_tables([Avatar, AvatarUpload])
