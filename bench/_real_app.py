"""Penstock as the benchmarks serve it, plus one route they compare the API against.

`/bench/actor/<user_id>` answers exactly what `GET /api/v0/actor` answers (the same view
function, unwrapped) for a user looked up by id, with no bearer token: the difference
between the two is what authentication costs. Served by gunicorn as `_real_app:create()`.
"""
import sys
from pathlib import Path

from flask import g

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import models  # noqa: E402  (Penstock itself, from the repository root)
from app import create_app  # noqa: E402
from views import api  # noqa: E402


def create():
    app = create_app()

    @app.get('/bench/actor/<user_id>')
    def actor_without_auth(user_id):
        g.api_user = models.User.get_by_id(user_id)
        return api.actor.__wrapped__()

    return app
