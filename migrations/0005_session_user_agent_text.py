"""A session keeps its User-Agent as text: PostgreSQL refused one longer than varchar(255)."""
from peewee import TextField


def up(migrator, db):
    # On PostgreSQL varchar to text is a change of type only; SQLite copies the table.
    migrator.migrate(migrator.alter_column_type('session', 'user_agent', TextField(null=True)))
