"""kill -9 in the middle of avatar saves, token creations and password rotations: the SQLite
file stays sound, nothing is half-written, what was acknowledged is kept, and the propagation
jobs left behind are carried out on the workspace server once a worker runs again.

Each round starts gunicorn (2 workers) and a propagation worker, keeps clients writing through
the API until every kind of write has been acknowledged a few times, and then kills both
servers' whole process groups with SIGKILL while requests are still in flight. The worker
converges the run's real workspace server as the rotations come; in the last round it is held
in the middle of one user's job (that user's lock on the server), so the kill always leaves
jobs pending."""
import contextlib
import http.client
import io
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import Counter
from contextlib import closing
from pathlib import Path

import pytest
from PIL import Image

import credentials
import database
import imaging
import models
import workspace_servers
import workspaces
from tests.conftest import TEST_PASSWORD_KEY
from tests.helpers import PASSWORD, logged_in_as, temporary_token, user_locked
from tests.servers import ROOT, api, call, gunicorn, prepare_database, server_env, stop

pytestmark = pytest.mark.slow  # gunicorn servers killed with SIGKILL

FLASK = Path(sys.executable).parent / 'flask'
ROUNDS = 3
ACKNOWLEDGED_PER_ROUND = 3  # of each kind of write, before the kill
ROUND_DEADLINE = 30  # seconds: a round that gets nowhere fails rather than hangs
WORKSPACES = ('alpha', 'beta', 'gamma')
WORKER_ENV = {'PROPAGATION_LEASE': '1', 'PROPAGATION_POLL': '0.05'}
# The writers rotate far more often than a person may (5 an hour): not what is tested here.
SERVER_ENV = {'PASSWORD_ROTATIONS_PER_USER': '10000 per hour'}


def picture():
    buffer = io.BytesIO()
    Image.effect_noise((900, 600), 60).convert('RGB').save(buffer, 'PNG')
    return buffer.getvalue()


def multipart(data):
    boundary = 'penstock-crash-boundary'
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="avatar"; '
            'filename="me.png"\r\nContent-Type: image/png\r\n\r\n').encode() + data \
        + f'\r\n--{boundary}--\r\n'.encode()
    return body, f'multipart/form-data; boundary={boundary}'


class Writer(threading.Thread):
    """Keeps making one kind of write for one user until told to stop or the server dies;
    `acknowledged` lists what the server said it did."""

    def __init__(self, base, handle, secret, kind, image):
        super().__init__(name=f'{kind}-{handle}', daemon=True)
        self.base, self.handle, self.secret, self.kind, self.image = (
            base, handle, secret, kind, image)
        self.acknowledged, self.refused = [], []
        self.halt = threading.Event()

    def run(self):
        try:
            while not self.halt.is_set():
                self.once()
        except (OSError, http.client.HTTPException):
            pass  # the server was killed under us, maybe mid-answer: that request may be lost

    def once(self):
        if self.kind == 'avatar':
            body, content_type = multipart(self.image)
            status, _, text = call(self.base, 'POST', f'/api/v0/user/{self.handle}/avatar',
                                   {'Authorization': f'Bearer {self.secret}',
                                    'Content-Type': content_type}, body)
            self.record(status, 200, text)
        elif self.kind == 'rotation':
            status, _, text = api(self.base, self.secret, 'POST',
                                  f'/user/{self.handle}/password')
            self.record(status, 201, text)
        else:
            status, _, text = api(self.base, self.secret, 'POST', f'/user/{self.handle}/token')
            if status == 409:  # tokens left by an earlier kill fill both slots: clear them
                status, _, text = api(self.base, self.secret, 'GET', f'/user/{self.handle}/token')
                for token in json.loads(text)['items']:
                    self.delete(token['id'])
            elif self.record(status, 201, text):
                token = json.loads(text)
                status, _, text = api(self.base, token['token'], 'GET', '/actor')
                assert status == 200, text
                self.delete(token['id'])

    def delete(self, token_id):
        status, _, text = api(self.base, self.secret, 'DELETE',
                              f'/user/{self.handle}/token/{token_id}')
        self.record(status, 200, text, kind='delete')

    def record(self, status, expected, text, kind=None):
        if status != expected:
            self.refused.append((kind or self.kind, status, text[:300]))
            return False
        self.acknowledged.append((kind or self.kind, json.loads(text)))
        return True


def start_worker(tmp_path, path):
    """`flask worker`, the propagation worker, in its own process group."""
    env = server_env(f'sqlite:///{path}', **WORKER_ENV)
    with open(tmp_path / 'worker.log', 'ab') as log:
        return subprocess.Popen([str(FLASK), '--app', 'app', 'worker'], cwd=ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def kill_all(*processes):
    for process in processes:
        try:
            os.killpg(process.pid, 9)
        except ProcessLookupError:
            pass
    for process in processes:
        stop(process, kill=True)


def crash_round(tmp_path, path, users, image):
    """Write until each kind is acknowledged ACKNOWLEDGED_PER_ROUND times, then kill -9."""
    worker = start_worker(tmp_path, path)
    try:
        with gunicorn(f'sqlite:///{path}', tmp_path / 'gunicorn.log',
                      workers=2, **SERVER_ENV) as (base, server):
            writers = [Writer(base, handle, secret, kind, image)
                       for handle, secret in users.items()
                       for kind in ('avatar', 'token', 'rotation')]
            for writer in writers:
                writer.start()
            deadline = time.monotonic() + ROUND_DEADLINE
            while any(sum(1 for kind, _ in w.acknowledged if kind == w.kind)
                      < ACKNOWLEDGED_PER_ROUND for w in writers):
                assert time.monotonic() < deadline, 'the writes did not get through in time'
                assert all(w.is_alive() for w in writers), [w.refused for w in writers]
                time.sleep(0.05)  # polling the writers' progress, not waiting for an event
            kill_all(server, worker)  # mid-request: every writer is still sending
            for writer in writers:
                writer.halt.set()
        # The listening socket is closed now, so requests queued on it fail at once.
        for writer in writers:
            writer.join(timeout=30)
            assert not writer.is_alive()
        return writers
    finally:
        kill_all(worker)


def test_kill_9_mid_write_leaves_nothing_half_done_and_pending_jobs_resume(
        tmp_path, monkeypatch, workspace_server):
    path = tmp_path / 'penstock.db'
    prepare_database(path)
    database.use_keys([TEST_PASSWORD_KEY])  # as the servers are
    monkeypatch.setattr(models.Config, 'workspace_servers', workspace_servers.Servers(
        [workspace_servers.Server(workspace_server.url)]))  # theirs, from the environment
    database.db.initialize(database.open_database(f'sqlite:///{path}'))
    users, ids = {}, {}
    with database.db.connection_context():
        for handle in ('ada', 'bea'):
            user = models.User.sign_up(f'{handle}@example.com', handle, PASSWORD)
            for workspace in WORKSPACES:
                workspaces.Workspace.provision(user, workspace)
            users[handle], ids[handle] = temporary_token(user), user.id
    database.db.close()
    image = picture()

    writers = []
    for round in range(ROUNDS):
        held = (user_locked(workspace_server.url, ids['ada']) if round == ROUNDS - 1
                else contextlib.nullcontext())
        with held:
            writers += crash_round(tmp_path, path, users, image)
    assert [refusal for w in writers for refusal in w.refused] == []

    with closing(sqlite3.connect(path)) as db:
        assert db.execute('PRAGMA integrity_check').fetchall() == [('ok',)]
        assert db.execute('PRAGMA foreign_key_check').fetchall() == []

    database.db.initialize(database.open_database(f'sqlite:///{path}'))
    with database.db.connection_context():
        for handle in users:
            user = models.User.get(models.User.handle == handle)
            mine = [w for w in writers if w.handle == handle]
            acknowledged = Counter(kind for w in mine for kind, _ in w.acknowledged)
            audited = Counter(r.action_type for r in models.AuditRecord.select().where(
                models.AuditRecord.identity == user))

            # Avatars: both sizes or neither, each a WebP that decodes; every stored change has
            # its audit record and its new version, and each acknowledged one was stored.
            avatar = models.Avatar.get(models.Avatar.user == user)
            assert avatar.custom_large is not None and avatar.custom_small is not None
            for data, side in ((avatar.custom_large, imaging.LARGE),
                               (avatar.custom_small, imaging.SMALL)):
                shown = Image.open(io.BytesIO(bytes(data)))
                shown.load()
                assert (shown.format, shown.size) == ('WEBP', (side, side))
            stored = user.avatar_version - 1
            assert audited['user.avatar.update'] == stored >= acknowledged['avatar']

            # Tokens: each row made whole, with its audit record; the limit held.
            tokens = list(credentials.Token.select().where(credentials.Token.user == user))
            assert len(tokens) <= credentials.TOKEN_LIMIT
            created = {json.loads(r.data)['token_id'] for r in models.AuditRecord.select()
                       .where(models.AuditRecord.identity == user,
                              models.AuditRecord.action_type == 'token.create')}
            for token in tokens:
                assert token.id in created and len(token.token_hash) == 64 and token.last4
            assert audited['token.create'] - audited['token.delete'] == len(tokens)
            assert audited['token.create'] >= acknowledged['token']
            for _, gone in (a for w in mine for a in w.acknowledged if a[0] == 'delete'):
                assert credentials.Token.get_or_none(credentials.Token.id == gone['id']) is None

            # Passwords: every rotation stored has its audit record and a job (the user's
            # workspaces are on one server), beside each workspace's creation's.
            password = workspaces.DatabasePassword.get(workspaces.DatabasePassword.user == user)
            assert password.password  # decrypts
            rotations = password.version - 1
            assert audited['user.password.rotate'] == rotations >= acknowledged['rotation']
            Job = workspaces.PropagationJob
            jobs = Counter(job.reason for job in Job.select().where(Job.user_id == user.id))
            assert jobs == {'workspace.create': len(WORKSPACES),
                            'user.password.rotate': rotations}
        pending = workspaces.PropagationJob.select().where(
            workspaces.PropagationJob.status == 'pending').count()
    database.db.close()
    assert pending > 0, 'no job was left pending by the kills, so resuming was not shown'

    # Back up: the server answers with what was kept, and a worker finishes the jobs.
    worker = start_worker(tmp_path, path)
    try:
        with gunicorn(f'sqlite:///{path}', tmp_path / 'gunicorn.log',
                      workers=2) as (base, _server):
            for handle, secret in users.items():
                status, _, text = api(base, secret, 'GET', '/actor')
                assert status == 200
                avatar = urllib.parse.urlsplit(json.loads(text)['avatar_url']).path
                status, headers, _ = call(base, 'GET', avatar)
                assert status == 200 and headers['Content-Type'] == 'image/webp'
            deadline = time.monotonic() + ROUND_DEADLINE
            while True:
                statuses = [w['password_status'] for handle, secret in users.items()
                            for w in json.loads(api(base, secret, 'GET',
                                                    f'/user/{handle}/workspace')[2])['items']]
                if set(statuses) == {'applied'}:
                    break
                assert time.monotonic() < deadline, statuses
                time.sleep(0.1)  # polling the API until the worker has caught up
            for handle, secret in users.items():  # each string logs in with the newest password
                password = json.loads(api(base, secret, 'GET', f'/user/{handle}/password')[2])
                password = password['$password']
                for item in json.loads(api(base, secret, 'GET',
                                           f'/user/{handle}/workspace')[2])['items']:
                    shown = item['connection_string'].replace(
                        workspaces.DatabasePassword.mask(password), password)
                    assert logged_in_as(shown) == (handle, item['database_name'])
    finally:
        kill_all(worker)

    database.db.initialize(database.open_database(f'sqlite:///{path}'))
    with database.db.connection_context():
        assert workspaces.PropagationJob.select().where(
            workspaces.PropagationJob.status == 'pending').count() == 0
        for workspace in workspaces.Workspace.select():
            current = workspaces.DatabasePassword.get(
                workspaces.DatabasePassword.user == workspace.user_id).version
            assert workspace.password_version == current
    database.db.close()
