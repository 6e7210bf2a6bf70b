"""The engine room under models.py: opening the database, migrating it, writing to it safely
and quickly, and encrypting what must not be stored in plain text.

Why each trick is here:

- Pooled connections (open_database): a connection outlives the request, so SQLite's
  pragmas and PostgreSQL's login are paid once, not on every request.
- A writer queue on SQLite (write_transaction): SQLite has one write lock, and a writer
  that finds it taken sleeps 1, 2, 5, 10 ms… and tries again, far longer than a write here
  holds it. A file lock (flock) on `<database>-writer` wakes the next writer as soon as the
  lock is free, however long the queue.
- An advisory lock on PostgreSQL (write_transaction): the rules checked inside a write (a
  count, an attempt counter, a version) must hold however many app servers share the
  database; row locks cannot guard a row that does not exist yet.
- Skipping locked rows (skip_locked): propagation workers on several hosts each claim a
  different job rather than queueing behind the one claiming first.
- The acting credential (act_as): a session or token revoked while a request that acts by
  it is running must not authorize that request's next write; it is checked again once the
  write lock is held.
- Prepared SQL (PreparedModel): Peewee builds a query's SQL anew each time it runs, which
  takes longer than SQLite takes to run it. The queries most requests make are built once
  per kind of database, and a row becomes an instance through its model's constructor.
- Fernet (encrypt, decrypt, reencrypt): secrets the app must show again (the password a
  user logs in to workspaces with) are stored encrypted under keys kept outside the database;
  several keys decrypt, so one can be retired."""
import contextlib
import contextvars
import fcntl
import os
import threading
from urllib.parse import parse_qsl, urlencode

from cryptography.fernet import Fernet, MultiFernet
from peewee import DatabaseProxy, ForeignKeyField, Model, SqliteDatabase
from playhouse.db_url import connect
from playhouse.migrations import Runner

db = DatabaseProxy()

MIGRATIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'migrations')
# wal_autocheckpoint: a checkpoint (two fsyncs, inside the write lock) once the WAL holds 4,000
# pages (16 MB) rather than SQLite's 1,000. A change writes four pages or more (its row, the audit
# record and its two indexes), so at 1,000 every 250th write paid for one: ~20 µs a write.
SQLITE_PRAGMAS = {'journal_mode': 'wal', 'foreign_keys': 1, 'busy_timeout': 5000,
                  'synchronous': 'normal', 'wal_autocheckpoint': 4000}
WRITE_LOCK = 0x50656E73  # PostgreSQL's advisory lock key for write_transaction ('Pens')


def open_database(url):
    """Open the database at a DATABASE_URL, pooled: a connection outlives the request, so it is
    set up once (SQLite's pragmas, PostgreSQL's login), not on every request.

    On SQLite, `?timeout=` (seconds, default 5) is how long a write waits for another's lock
    before it fails with "database is locked"."""
    scheme = url.partition('://')[0]
    if scheme.startswith('sqlite'):
        base, _, query = url.partition('?')
        pragmas, rest = dict(SQLITE_PRAGMAS), []
        for name, value in parse_qsl(query, keep_blank_values=True):
            if name != 'timeout':
                rest.append((name, value))
                continue
            try:
                seconds = float(value)
            except ValueError:
                seconds = -1
            if not 0 <= seconds <= 3600:
                raise ValueError(f'DATABASE_URL: timeout is a number of seconds from 0 to 3600 '
                                 f'(like 5 or 0.5), not {value!r}')
            # As busy_timeout: the pragma, set after connecting, overrides the driver's own
            # timeout, and the pool would take `timeout` as its own wait for a free connection.
            pragmas['busy_timeout'] = round(seconds * 1000)
        url = base + ('?' + urlencode(rest) if rest else '')
        if scheme == 'sqlite':
            # No cap, as each thread holds at most one.
            database = connect('sqlite+pool' + url[len('sqlite'):], pragmas=pragmas,
                               check_same_thread=False, max_connections=None)
        else:
            database = connect(url, pragmas=pragmas, check_same_thread=False)
        _create_private(database.database)
        return database
    if scheme in ('postgres', 'postgresql'):
        # Per process: a sync worker holds one connection, a threaded server one a thread.
        # At most 20, a request waiting up to 10 s for one to come free rather than failing;
        # each is replaced after 5 minutes, so the pool follows a failover or a restart.
        # The URL's own ?max_connections=, ?stale_timeout= or ?timeout= win.
        given = dict(parse_qsl(url.partition('?')[2]))
        pool = {name: value for name, value in
                (('max_connections', 20), ('stale_timeout', 300), ('timeout', 10))
                if name not in given}
        return connect(scheme + '+pool' + url[len(scheme):], **pool)
    return connect(url)


def _create_private(path):
    """Create the SQLite database file readable and writable by us only, as the key files
    are, before SQLite would create it by the umask (often world-readable). SQLite gives its
    -wal and -shm files the mode of the database file."""
    if path in ('', ':memory:') or path.startswith('file:'):
        return
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT, 0o600))
    except FileNotFoundError:
        pass  # no such directory: SQLite says so when it first connects


def migrate(database):
    """Apply every pending migration in migrations/; returns their names."""
    return Runner(database, MIGRATIONS).up()


class _WriterTurn(threading.local):
    """This thread's hold on a SQLite database's writer file lock (see below)."""
    pid = path = fd = None
    depth = 0  # write transactions nest (as savepoints); the outermost takes the lock


_writer_turn = _WriterTurn()


@contextlib.contextmanager
def _sqlite_write_transaction():
    """BEGIN IMMEDIATE once this thread holds the database's writer lock, a file lock on
    `<database>-writer`. Waiting for SQLite's own write lock is sleeping 1, 2, 5, 10 ms… and
    trying again, far longer than a write here holds it (a fraction of a millisecond), until
    the busy timeout ends it; a file lock wakes the next writer as soon as it is free, however
    long the queue. The kernel drops the lock of a process that dies. Writes outside
    write_transaction() still wait for SQLite's lock (its busy timeout), as before; so does
    one inside another transaction, which may hold SQLite's lock already (waiting for the
    file lock then could deadlock)."""
    path = db.obj.database
    if (path in ('', ':memory:') or path.startswith('file:')
            or (db.in_transaction() and not _writer_turn.depth)):
        with db.atomic('IMMEDIATE') as transaction:
            yield transaction
        return
    turn = _writer_turn
    if (turn.pid, turn.path) != (os.getpid(), path):
        if turn.fd is not None and turn.pid == os.getpid() and turn.depth == 0:
            os.close(turn.fd)
        turn.pid, turn.path, turn.depth = os.getpid(), path, 0
        turn.fd = os.open(path + '-writer', os.O_RDWR | os.O_CREAT, 0o600)
    if turn.depth == 0:
        fcntl.flock(turn.fd, fcntl.LOCK_EX)
    turn.depth += 1
    try:
        with db.atomic('IMMEDIATE') as transaction:
            yield transaction
    finally:
        turn.depth -= 1
        if turn.depth == 0:
            fcntl.flock(turn.fd, fcntl.LOCK_UN)


@contextlib.contextmanager
def _advisory_transaction():
    with db.atomic() as transaction:
        db.execute_sql('SELECT pg_advisory_xact_lock(%s)', (WRITE_LOCK,))
        yield transaction


def locked(query):
    """`query` locking the rows it reads until the transaction ends: FOR UPDATE, except on
    SQLite, where write_transaction() already holds the one write lock."""
    return query if isinstance(db.obj, SqliteDatabase) else query.for_update()


def skip_locked(query):
    """`query` locking the rows it reads, and passing over those another transaction has
    locked rather than waiting for them (FOR UPDATE SKIP LOCKED), so workers on other hosts
    each take a different row. On SQLite as it is: write_transaction() holds the one write
    lock, so nobody else holds a row."""
    if isinstance(db.obj, SqliteDatabase):
        return query
    return query.for_update('FOR UPDATE SKIP LOCKED')


def try_lock(name):
    """Whether this transaction now holds the lock called `name` (a string), until it ends;
    False when another transaction holds it. On PostgreSQL a transaction-level advisory
    lock; on SQLite always True: write_transaction() holds the one write lock."""
    if isinstance(db.obj, SqliteDatabase):
        return True
    return db.execute_sql('SELECT pg_try_advisory_xact_lock(%s, hashtext(%s))',
                          (WRITE_LOCK, name)).fetchone()[0]


class CredentialRevoked(Exception):
    """The session or token this request acts by was revoked (or ran out) after it was
    checked at the start of the request; the write it was about to authorize was undone.

    Not a models.Refused: the views that turn a refusal into a message must not swallow it."""


# The credential the current request acts by, as (model, id): set by the app where it
# checks a session cookie or a bearer token, cleared when the request ends. A context
# variable, so a thread the app starts (Gravatar lookups, the propagation worker) begins
# without one.
_acting = contextvars.ContextVar('acting_credential', default=None)
# True inside a write_transaction(): the nested ones have nothing left to check.
_writing = contextvars.ContextVar('writing', default=False)


def act_as(credential):
    """Make `credential` (a row of a PreparedModel with a `works()` method, such as a session
    or a token; None: no credential) the one this request's write transactions act by."""
    _acting.set(None if credential is None else (type(credential), credential.id))


def acting():
    """The credential this request acts by, read again (None: none, or it is gone)."""
    acting = _acting.get()
    if acting is None:
        return None
    model, key = acting
    return model.prepared_get(model.id, key)


def _check_acting(acting, lock):
    """Raise CredentialRevoked unless the (model, id) credential is still there and works.
    Called with the write lock held, so a reset cannot commit between this read and the write
    after it; `lock` locks the row too, for a transaction without that lock (PostgreSQL's
    non-exclusive one)."""
    model, key = acting
    row = model.prepared_get(model.id, key, lock=lock)
    if row is None or not row.works():
        raise CredentialRevoked(f'{model.__name__} {key} no longer works.')


@contextlib.contextmanager
def _checked_transaction(transaction, acting, lock):
    writing = _writing.set(True)
    try:
        with transaction as entered:
            _check_acting(acting, lock)
            yield entered
    finally:
        _writing.reset(writing)


def write_transaction(exclusive=True):
    """A transaction for read-modify-write: on SQLite it takes the write lock up front; on
    PostgreSQL (`exclusive`) a transaction-wide advisory lock, so the rules checked inside
    (a count, an attempt counter, a version) hold however many app servers share the
    database. `exclusive=False` is for a transaction whose row locks are enough.

    In a request that acts by a credential, the outermost one checks it again once the lock
    is held (see act_as): a credential revoked meanwhile writes nothing."""
    sqlite = isinstance(db.obj, SqliteDatabase)
    if sqlite:
        transaction = _sqlite_write_transaction()
    else:
        transaction = _advisory_transaction() if exclusive else db.atomic()
    acting = _acting.get()
    if acting is None or _writing.get():
        return transaction
    return _checked_transaction(transaction, acting, lock=not (sqlite or exclusive))


def work_until(stop, poll, step, log, what, idle=None):
    """A worker's loop, in a database connection of this thread's own: `step()` until it
    finds nothing to do, then `idle()` (if given) and a wait of `poll` seconds, until `stop`
    (a threading.Event) is set. An error is written to `log` as the `what`'s, and the loop
    goes on: the database may be briefly away."""
    while not stop.is_set():
        try:
            with db.connection_context():
                while not stop.is_set() and step():
                    pass
        except Exception:  # noqa: BLE001 - keep working
            log.exception('The %s hit an error; it goes on.', what)
        finally:
            if idle is not None:
                idle()
        stop.wait(poll)


_PREPARED = {}


def _prepared(key, build, params):
    """The SQL text that `build()` makes for this kind of database, made once. The first time,
    the parameters it made are checked against `params`, the order the caller will pass."""
    key = (type(db.obj),) + key
    sql = _PREPARED.get(key)
    if sql is None:
        sql, built = build()
        if list(built) != list(params):
            raise RuntimeError(f'{key}: SQL parameters {built!r} are not in the order {params!r}')
        _PREPARED[key] = sql
    return sql


class PreparedModel(Model):
    """A Peewee model (on `db`) with prepared twins of get, create and save, for the queries
    most requests make: their SQL is built once per kind of database (see _prepared), and a
    row becomes an instance through the model's own constructor."""

    @classmethod
    def prepared_get(cls, field, value, lock=False, join=None):
        """The row whose `field` equals `value`, or None; `lock` locks it as locked() does.
        `join`, a foreign key of this model, reads the row it points to in the same query."""
        models = [cls, join.rel_model] if join else [cls]

        def build():
            query = cls.select(*models).where(field == value)
            if join:
                query = query.join(join.rel_model, on=(join == join.rel_field))
            return (locked(query) if lock else query).sql()
        params = [field.db_value(value)]
        row = db.execute_sql(_prepared(('get', cls, field.name, lock, join and join.name),
                                       build, params), params).fetchone()
        if row is None:
            return None
        # Model(**values), not Model.raw (whose cursor wrapper maps the columns anew on each
        # run, ~50 µs) nor a select (Peewee builds its SQL anew, ~100 µs): Peewee marks each
        # value given as changed (is_dirty()), which only a save of the dirty fields alone
        # (only_save_dirty) heeds, and none here does.
        instances, start = [], 0
        for model in models:
            fields = model._meta.sorted_fields
            instances.append(model(**{
                field.name: None if raw is None else field.python_value(raw)
                for field, raw in zip(fields, row[start:start + len(fields)])}))
            start += len(fields)
        if join:
            setattr(instances[0], join.name, instances[1])
        return instances[0]

    @classmethod
    def prepared_create(cls, **values):
        """Insert one row, as create() does (defaults filled in), and return it."""
        row = cls(**values)
        fields = cls._meta.sorted_fields
        params = [field.db_value(value) for field, value in zip(fields, _columns(row))]
        sql = _prepared(('create', cls), lambda: cls.insert(
            dict(zip(fields, _columns(row)))).sql(), params)
        db.execute_sql(sql, params)
        return row

    def prepared_save(self):
        """Write every column of this row. Only for a row read under lock in the current
        transaction (prepared_get with `lock`), so that nothing written meanwhile is
        overwritten."""
        cls, key = type(self), self._meta.primary_key
        fields = [field for field in self._meta.sorted_fields if field is not key]
        values = [value for field, value in zip(self._meta.sorted_fields, _columns(self))
                  if field is not key]
        params = ([field.db_value(value) for field, value in zip(fields, values)]
                  + [key.db_value(self.get_id())])
        sql = _prepared(('save', cls), lambda: cls.update(dict(zip(fields, values))).where(
            key == self.get_id()).sql(), params)
        db.execute_sql(sql, params)


def _columns(row):
    """The value of each of `row`'s columns, in its model's field order: a foreign key's
    is the id it holds (its object_id_name accessor), not the row it points to."""
    return [getattr(row, field.object_id_name if isinstance(field, ForeignKeyField)
                    else field.name) for field in row._meta.sorted_fields]


_cipher = None  # a MultiFernet over the keys given to use_keys()


def use_keys(keys):
    """Encrypt with the first of `keys` (Fernet keys) from now on; decrypt with any of them,
    so an old key can be retired once reencrypt() has moved everything to the first."""
    global _cipher
    _cipher = MultiFernet([Fernet(key) for key in keys])


def encrypt(text):
    return _cipher.encrypt(text.encode()).decode()


def decrypt(ciphertext):
    return _cipher.decrypt(ciphertext.encode()).decode()


def reencrypt(field):
    """Encrypt every value of `field` (a column of ciphertexts) with the first key; returns
    how many were rewritten. A value changed meanwhile is left as its writer made it."""
    model, key = field.model, field.model._meta.primary_key
    count = 0
    for row in list(model.select(key, field)):
        old = getattr(row, field.name)
        new = _cipher.rotate(old.encode()).decode()
        count += model.update({field: new}).where(key == row.get_id(), field == old).execute()
    return count
