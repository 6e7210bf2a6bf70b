"""The console home and short links into it."""
from flask import Blueprint, redirect, url_for
from flask_login import login_required

bp = Blueprint('home', __name__)


@bp.get('/')
@login_required
def index():
    """The console home; until workspaces exist, that is Settings → Profile."""
    return redirect(url_for('profile.page'))


@bp.get('/settings')
@login_required
def settings():
    """A short link to the current user's settings."""
    return redirect(url_for('profile.page'))
