"""Fixtures: a fresh app on an on-disk database, clients, users and real logins."""
import threading

import pytest
from cryptography.fernet import Fernet
from bs4 import BeautifulSoup
from werkzeug.serving import make_server

import models
from app import create_app

PASSWORD = 'correct horse battery'
TEST_PASSWORD_KEY = Fernet.generate_key().decode()


@pytest.fixture
def app(tmp_path):
    app = create_app({
        'TESTING': True,
        'SECRET_KEY': 'test secret key',
        'DATABASE_URL': f'sqlite:///{tmp_path}/penstock.db',
        'GRAVATAR_ENABLED': False,  # tests that look avatars up start their own server
        'DATABASE_PASSWORD_KEYS': TEST_PASSWORD_KEY,
        'PROPAGATION_DELAY': 0,
    })
    models.migrate(models.db.obj)
    yield app
    models.db.close()


@pytest.fixture
def client(app):
    return app.test_client()


def html(response):
    return BeautifulSoup(response.get_data(as_text=True), 'html.parser')


def csrf_token(client, url):
    """The CSRF token a form on `url` carries, as a person's browser would submit it."""
    field = html(client.get(url)).find('input', attrs={'name': 'csrf_token'})
    assert field is not None, f'no CSRF field on {url}'
    return field['value']


HTMX = {'HX-Request': 'true'}


def make_user(email='alice@example.com', handle='alice', password=PASSWORD):
    with models.db.connection_context():
        return models.User.sign_up(email, handle, password)


def log_in(client, login, password=PASSWORD):
    token = csrf_token(client, '/login')
    return client.post('/login', data={'email': login, 'password': password,
                                       'csrf_token': token})


@pytest.fixture
def user(app):
    return make_user()


@pytest.fixture
def logged_in(client, user):
    response = log_in(client, user.handle)
    assert response.status_code == 302
    return user


@pytest.fixture
def other_user(app):
    return make_user('bob@example.com', 'bob')


@pytest.fixture
def server(app):
    """This test's app served over real HTTP on loopback, for clients outside the process."""
    httpd = make_server('127.0.0.1', 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), name='test-server')
    thread.start()
    try:
        yield f'http://127.0.0.1:{httpd.server_port}'
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
