"""What acts on a whole account across its parts (credentials, workspaces): above both, so
neither imports the other."""
import credentials
from database import write_transaction
from workspaces import DatabasePassword


def reset_authentication(user, ip=None):
    """Reset authentication: end every way in to Penstock (credentials.reset_authentication)
    and to the workspaces: a new Database Password, and every open connection of the user's
    role ended on every server (queued here, carried out by the worker), in one
    transaction."""
    with write_transaction():
        password = DatabasePassword.rotate(user, ip, end_connections=True, tell=False)
        return credentials.reset_authentication(user, ip, database_password=password.version)
