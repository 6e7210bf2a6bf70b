"""Token secrets, the two-token limit, bearer lookup, CLI login requests and resets."""
import datetime
import re
import zlib

import pytest
from peewee import IntegrityError

import credentials
import database
import models
from tests.helpers import log_in


def test_token_secrets_have_the_documented_format():
    secret = credentials.Token.new_secret('pst_')
    assert re.fullmatch(r'pst_[0-9A-Za-z]{36}', secret)
    body, checksum = secret[:-6], secret[-6:]
    number = 0
    for char in checksum:
        number = number * 62 + credentials.Token.ALPHABET.index(char)
    assert number == zlib.crc32(body.encode())
    assert credentials.Token.prefix_of(secret) == 'pst_'
    assert credentials.Token.prefix_of(credentials.Token.new_secret('pstt_')) == 'pstt_'
    assert len({credentials.Token.new_secret('pst_') for _ in range(1000)}) == 1000


@pytest.mark.parametrize('mangle', [
    lambda s: s[:-1] + ('A' if s[-1] != 'A' else 'B'),        # checksum off by one character
    lambda s: s[:10] + ('x' if s[10] != 'x' else 'y') + s[11:],  # a typo in the random part
    lambda s: s[:-1],                                          # too short
    lambda s: s + 'a',                                         # too long
    lambda s: 'psx_' + s[4:],                                  # unknown prefix
    lambda s: s.replace(s[5], '-'),                            # not base62
    lambda s: '',
], ids=['checksum', 'typo', 'short', 'long', 'prefix', 'not-base62', 'empty'])
def test_a_malformed_or_bad_checksum_token_is_rejected_before_the_database(mangle, monkeypatch):
    def no_database(*args, **kwargs):
        raise AssertionError('the database was asked')
    monkeypatch.setattr(credentials.Token, 'select', no_database)
    monkeypatch.setattr(credentials.TemporaryToken, 'select', no_database)
    secret = mangle(credentials.Token.new_secret('pst_'))
    assert credentials.Token.prefix_of(secret) is None
    assert credentials.bearer(secret) is None


def test_only_a_hash_and_the_last_four_are_stored(alice):
    token, secret = credentials.Token.issue(alice, '10.0.0.1')
    row = credentials.Token.get_by_id(token.id)
    assert row.token_hash == models.sha256(secret) and row.last4 == secret[-4:]
    dump = repr([tuple(r) for m in (credentials.Token, models.AuditRecord)
                 for r in m.select().tuples()])
    assert secret not in dump and secret[4:-4] not in dump
    assert credentials.bearer(secret).id == token.id


def test_a_user_may_hold_two_tokens_and_no_third(alice):
    credentials.Token.issue(alice)
    second, _ = credentials.Token.issue(alice)
    second.set_status('inactive')
    with pytest.raises(models.Refused, match='already have 2 tokens'):
        credentials.Token.issue(alice)
    assert credentials.Token.select().count() == 2
    second.remove()
    credentials.Token.issue(alice)
    assert sorted(t.slot for t in credentials.Token.for_user(alice)) == [1, 2]


def test_the_database_itself_refuses_a_third_token(alice):
    credentials.Token.issue(alice)
    credentials.Token.issue(alice)
    for slot in (1, 3):
        with pytest.raises(IntegrityError):
            with database.db.atomic():
                credentials.Token.create(user=alice, slot=slot, token_hash=f'h{slot}', last4='abcd')


def test_a_refused_third_token_writes_no_audit_record(alice):
    credentials.Token.issue(alice)
    credentials.Token.issue(alice)
    before = models.AuditRecord.select().count()
    with pytest.raises(models.Refused):
        credentials.Token.issue(alice)
    assert models.AuditRecord.select().count() == before


def test_token_changes_are_audited_once_each(alice):
    token, _ = credentials.Token.issue(alice, '10.0.0.1')
    assert token.set_status('inactive', '10.0.0.1') is True
    assert token.set_status('inactive', '10.0.0.1') is False
    token.remove('10.0.0.1')
    records = list(models.AuditRecord.select().where(
        models.AuditRecord.action_type.startswith('token.')).order_by(
        models.AuditRecord.created_at))
    assert [r.action_type for r in records] == ['token.create', 'token.update', 'token.delete']
    assert {r.target_id for r in records} == {token.id}
    assert {r.actor_ip for r in records} == {'10.0.0.1'}


def test_bearer_refuses_inactive_deleted_and_expired_tokens(alice):
    token, secret = credentials.Token.issue(alice)
    token.set_status('inactive')
    assert credentials.bearer(secret) is None
    token.set_status('active')
    assert credentials.bearer(secret).user.handle == 'alice'
    token.remove()
    assert credentials.bearer(secret) is None
    temporary = credentials.Token.new_secret('pstt_')
    row = credentials.TemporaryToken.create(user=alice, token_hash=models.sha256(temporary),
                                            expires_at=models.utcnow() + datetime.timedelta(days=1))
    assert credentials.bearer(temporary).id == row.id
    credentials.TemporaryToken.update(expires_at=models.utcnow()).execute()
    assert credentials.bearer(temporary) is None


def test_last_used_is_written_at_most_once_a_minute(alice):
    token, secret = credentials.Token.issue(alice)
    credentials.bearer(secret)
    first = credentials.Token.get_by_id(token.id).last_used_at
    assert first is not None
    credentials.bearer(secret)
    assert credentials.Token.get_by_id(token.id).last_used_at == first
    credentials.Token.update(last_used_at=first - credentials.TOKEN_TOUCH_EVERY * 2).execute()
    credentials.bearer(secret)
    last_used_at = credentials.Token.get_by_id(token.id).last_used_at
    assert last_used_at > first - credentials.TOKEN_TOUCH_EVERY


def confirmed_request(user):
    request = credentials.LoginRequest.start('192.0.2.7')
    code = request.confirm(user, '10.0.0.1')
    return request, code


def test_a_confirmed_login_request_trades_its_code_for_one_temporary_token(alice):
    request, code = confirmed_request(alice)
    assert re.fullmatch(r'\d{6}', code)
    secret = request.exchange(code)
    assert credentials.Token.prefix_of(secret) == 'pstt_'
    credential = credentials.bearer(secret)
    assert credential.user.handle == 'alice'
    lifetime = credential.expires_at - credential.created_at
    assert abs(lifetime - credentials.TEMPORARY_TOKEN_LIFETIME) < datetime.timedelta(seconds=1)
    with pytest.raises(models.Refused, match='expired or was already used'):
        request.exchange(code)
    assert credentials.LoginRequest.open_request(request.id) is None
    assert credentials.TemporaryToken.select().count() == 1


def test_an_unverified_request_cannot_be_exchanged(alice):
    request = credentials.LoginRequest.start()
    with pytest.raises(models.Refused, match='not been verified'):
        request.exchange('123456')


def test_three_wrong_codes_end_the_request(alice):
    request, code = confirmed_request(alice)
    wrong = f'{(int(code) + 1) % 10 ** 6:06d}'
    with pytest.raises(models.Refused, match='2 attempts left'):
        request.exchange(wrong)
    with pytest.raises(models.Refused, match='1 attempt left'):
        request.exchange(wrong)
    with pytest.raises(models.Refused, match='has ended'):
        request.exchange(wrong)
    with pytest.raises(models.Refused):
        request.exchange(code)
    assert credentials.TemporaryToken.select().count() == 0


def test_an_expired_request_can_never_issue_a_token(alice):
    request, code = confirmed_request(alice)
    credentials.LoginRequest.update(expires_at=models.utcnow()).execute()
    assert credentials.LoginRequest.open_request(request.id) is None
    with pytest.raises(models.Refused):
        request.exchange(code)


def test_a_declined_request_is_gone(alice):
    request = credentials.LoginRequest.start()
    request.decline(alice)
    assert credentials.LoginRequest.get_or_none(credentials.LoginRequest.id == request.id) is None
    assert models.AuditRecord.select().where(
        models.AuditRecord.action_type == 'login_token.decline').count() == 1


def test_a_request_can_be_confirmed_only_once(alice, other_user):
    request, _ = confirmed_request(alice)
    with pytest.raises(models.Refused):
        request.confirm(models.User.get_by_id(other_user.id))


def test_reset_authentication_ends_every_way_in(app, alice, other_user):
    client = app.test_client()
    log_in(client, 'alice')
    _, user_secret = credentials.Token.issue(alice)
    request, code = confirmed_request(alice)
    temporary = request.exchange(code)
    pending, _ = confirmed_request(alice)
    _, bobs_secret = credentials.Token.issue(models.User.get_by_id(other_user.id))

    counts = credentials.reset_authentication(alice, '10.0.0.1')

    assert counts == {'sessions': 1, 'temporary_tokens': 1, 'tokens': 1}
    assert credentials.bearer(user_secret) is None and credentials.bearer(temporary) is None
    assert credentials.LoginRequest.open_request(pending.id) is None
    assert client.get('/user/alice/settings/profile').status_code == 302
    assert credentials.bearer(bobs_secret) is not None
    record = models.AuditRecord.get(models.AuditRecord.action_type == 'user.authentication.reset')
    assert record.actor_ip == '10.0.0.1'


def test_audit_pages_follow_the_cursor_without_gaps_or_repeats(alice):
    base = models.utcnow()
    rows = [dict(id=models.new_id('a'), identity=alice.id, identity_handle='alice',
                 action_type='user.update' if n % 3 else 'token.create', actor_id=alice.id,
                 actor_handle='alice', data='{}',
                 created_at=base - datetime.timedelta(seconds=n // 2)) for n in range(250)]
    models.AuditRecord.insert_many(rows).execute()
    seen, cursor = [], None
    while True:
        records, cursor = models.AuditRecord.page(alice, 40, after=cursor)
        seen.extend(r.id for r in records)
        if cursor is None:
            break
    everything = models.AuditRecord.select().where(models.AuditRecord.identity == alice)
    assert len(seen) == len(set(seen)) == everything.count()
    keys = [(r.created_at, r.id) for r in
            (models.AuditRecord.get_by_id(i) for i in seen)]
    assert keys == sorted(keys, reverse=True)
    tokens, _ = models.AuditRecord.page(alice, 100, action_type='token.create')
    assert {r.action_type for r in tokens} == {'token.create'} and len(tokens) == 84
