"""Verified email addresses: user.email_verified_at and user.new_email (Change email), mail held
for unverified addresses (email.held), and an address unique among verified accounts only.

What becomes of the addresses already stored, account by account, oldest first:
- an address that email-validator accepts is stored in its normalised form (the rule of
  models.normalised_email as this migration was written: ASCII form, lowercased) and counts as
  verified, as every existing account does;
- when two accounts' addresses are one address once normalised (they differed only in case
  or in how the domain was spelled), the oldest account keeps it verified and the others hold it
  unverified: their mail waits until they verify it (which they cannot while the oldest has it)
  or change it on Profile;
- an address email-validator refuses (a list such as "me@attacker.example,root", a comment) is
  kept as it was, unverified: nothing is sent to it until its account changes it to a valid one.
Pending mail to an account left unverified is held, as it is for new accounts."""
import datetime

from email_validator import EmailNotValidError, validate_email
from peewee import BooleanField, CharField, DateTimeField


def normalised(address):
    """The stored form of `address`, or None when email-validator refuses it (frozen here: a
    later change of the app's rule must not change what this migration did)."""
    try:
        checked = validate_email(address.strip(), check_deliverability=False,
                                 test_environment=True, allow_smtputf8=False,
                                 allow_display_name=False, allow_quoted_local=False,
                                 allow_domain_literal=False)
    except EmailNotValidError:
        return None
    return checked.ascii_email.lower()


def up(migrator, db):
    migrator.migrate(
        migrator.add_column('user', 'email_verified_at', DateTimeField(null=True)),
        migrator.add_column('user', 'new_email', CharField(null=True)),
        migrator.add_column('email', 'held', BooleanField(default=False)),
        migrator.drop_index('user', 'user_email'),  # the unique one of 0001
        migrator.add_index('user', ('email',), False),
        migrator.add_index('email', ('to_address', 'created_at'), False),
    )
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    param = db.param
    taken = set()
    for user_id, email in db.execute_sql(
            'SELECT id, email FROM "user" ORDER BY created_at, id').fetchall():
        address = normalised(email)
        if address is None:
            continue  # kept as it was, unverified
        verified = address not in taken
        taken.add(address)
        db.execute_sql(f'UPDATE "user" SET email = {param}, email_verified_at = {param} '
                       f'WHERE id = {param}', (address, now if verified else None, user_id))
    db.execute_sql('UPDATE email SET held = %s WHERE status = %s AND user_id IN '
                   '(SELECT id FROM "user" WHERE email_verified_at IS NULL)'.replace('%s', param),
                   (True, 'pending'))
    # SQLite and PostgreSQL both have partial indexes; peewee's migrator does not make them.
    db.execute_sql('CREATE UNIQUE INDEX user_email_verified ON "user" (email) '
                   'WHERE email_verified_at IS NOT NULL')
