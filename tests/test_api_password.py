"""GET and POST /api/v0/user/{handle}/password: read the database password, rotate it.

Answers go through tests.test_api.Api, which checks them against our OpenAPI document and
Steampipe's UserDatabasePassword."""
import json

import jsonschema
import pytest

import models
from tests.helpers import IP, REFERENCE_SHAPES, assert_conforms, audit, errors_at
from workspaces import DatabasePassword, PropagationJob, Workspace

URL = '/api/v0/user/alice/password'
REFERENCE = 'urn:reference#/components/schemas/UserDatabasePassword'


def stored(user):
    return DatabasePassword.get(DatabasePassword.user == user)


def test_the_password_is_the_decrypted_one_in_steampipes_shape(api, alice):
    response = api('GET', URL)
    assert response.status_code == 200
    body = response.get_json()
    row = stored(alice)
    assert body == {'$password': row.password, 'id': row.id, 'user_id': alice.id,
                    'created_at': row.created_at.isoformat(timespec='milliseconds') + 'Z'}
    assert row.ciphertext != row.password and row.password not in row.ciphertext
    assert_conforms(body, REFERENCE, jsonschema.Draft4Validator)
    assert REFERENCE_SHAPES['user_getDBPassword'] == 'UserDatabasePassword'


def test_the_reference_schema_would_refuse_a_password_object_without_the_secret(api):
    body = api('GET', URL).get_json()
    del body['$password']
    with pytest.raises(AssertionError):
        assert_conforms(body, REFERENCE, jsonschema.Draft4Validator)


def test_reading_the_password_changes_and_records_nothing(api, alice):
    first = api('GET', URL).get_json()
    records = len(audit())
    assert api('GET', URL).get_json() == first
    assert len(audit()) == records and stored(alice).version == 1


def test_rotating_answers_201_with_a_new_password_and_id(api, alice):
    old = api('GET', URL).get_json()
    response = api('POST', URL)
    assert response.status_code == 201
    assert response.headers['Location'] == URL
    new = response.get_json()
    assert new['$password'] != old['$password'] and new['id'] != old['id']
    assert new['user_id'] == alice.id and new['created_at'] >= old['created_at']
    row = stored(alice)
    assert (row.version, row.id, row.password) == (2, new['id'], new['$password'])
    assert api('GET', URL).get_json() == new
    assert_conforms(new, REFERENCE, jsonschema.Draft4Validator)


def test_rotating_makes_one_pending_job_per_server_of_the_users_workspaces(api, alice, bob):
    """A job brings one user's role on one server up to date: two workspaces on one server
    make one job, a workspace on another server another."""
    analytics, staging, reports = (Workspace.provision(alice, handle)
                                   for handle in ('analytics', 'staging', 'reports'))
    Workspace.provision(bob, 'elsewhere')
    Workspace.update(server='other.example:5432').where(Workspace.id == reports.id).execute()
    api('POST', URL, {})
    jobs = PropagationJob.select().where(PropagationJob.reason == 'user.password.rotate')
    assert sorted((job.user_id, job.server, job.status) for job in jobs) == sorted(
        [(alice.id, analytics.server, 'pending'), (alice.id, 'other.example:5432', 'pending')])
    assert analytics.server == staging.server != 'other.example:5432'


def test_rotating_is_audited_once_without_the_password(api, alice):
    old = api('GET', URL).get_json()['$password']
    Workspace.provision(alice, 'analytics')
    new = api('POST', URL).get_json()['$password']
    [record] = audit('user.password.rotate')
    assert record.actor_ip == IP and record.actor_id == alice.id
    assert json.loads(record.data) == {'version': 2, 'workspaces': 1}
    everything = json.dumps([list(row) for row in models.AuditRecord.select().tuples()],
                            default=str)
    assert old not in everything and new not in everything


@pytest.mark.parametrize('body, locations', [
    ({'password': 'chosen-by-me'}, ['body.password']),
    ([], ['body']),
], ids=['a-chosen-password', 'not-an-object'])
def test_a_rotation_with_a_body_is_a_400_and_changes_nothing(api, alice, body, locations):
    Workspace.provision(alice, 'analytics')
    before = api('GET', URL).get_json()
    jobs = list(PropagationJob.select().tuples())  # the new workspace's
    response = api('POST', URL, body)
    assert response.status_code == 400 and errors_at(response) == locations
    assert api('GET', URL).get_json() == before
    assert list(PropagationJob.select().tuples()) == jobs
    assert audit('user.password.rotate') == []


def test_another_users_password_is_404_and_stays_as_it_was(api, bob):
    bobs = DatabasePassword.for_user(bob)
    for method in ('GET', 'POST'):
        response = api(method, '/api/v0/user/bob/password')
        assert response.status_code == 404
        assert bobs.password not in response.get_data(as_text=True)
    assert stored(bob).version == 1
