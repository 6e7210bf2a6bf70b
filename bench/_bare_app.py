"""The baseline of the fragment benchmark: a bare Flask + Peewee app on the same database.

One SELECT plus a small template (GET), and one UPDATE (POST), on Penstock's own
`preferences` table, opened with Penstock's database settings and connected per request the
way Penstock connects (database.open_database; connect/close around each request). No login,
no CSRF, no sessions: what is left is the floor any Flask + Peewee page stands on.
Served by gunicorn as `_bare_app:create()` with DATABASE_URL set.
"""
import os
import sys
from pathlib import Path

from flask import Flask, request
from peewee import BooleanField, CharField, Model

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import database  # noqa: E402  (Penstock's database settings, from the repository root)

TEMPLATE = """<form method="post">
  {% for name, on in switches %}
  <label><input type="checkbox" name="{{ name }}"{% if on %} checked{% endif %}> {{ name }}</label>
  {% endfor %}
</form>
"""


class Preferences(Model):
    user_id = CharField(primary_key=True)
    community_updates = BooleanField()
    product_updates = BooleanField()
    tips_and_tricks = BooleanField()

    class Meta:
        table_name = 'preferences'


def create():
    app = Flask(__name__)
    db = database.open_database(os.environ['DATABASE_URL'])
    Preferences._meta.set_database(db)
    template = app.jinja_env.from_string(TEMPLATE)

    @app.before_request
    def connect():
        db.connect(reuse_if_open=True)

    @app.teardown_request
    def close(exc):
        if not db.is_closed():
            db.close()

    @app.get('/preferences/<user_id>')
    def show(user_id):
        row = Preferences.get_by_id(user_id)
        return template.render(switches=[('community_updates', row.community_updates),
                                         ('product_updates', row.product_updates),
                                         ('tips_and_tricks', row.tips_and_tricks)])

    @app.post('/preferences/<user_id>')
    def save(user_id):
        (Preferences.update(community_updates='community_updates' in request.form)
         .where(Preferences.user_id == user_id).execute())
        return 'saved'

    return app
