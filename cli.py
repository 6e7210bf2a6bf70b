"""Penstock's command-line client (standard library only): log in via the browser, whoami, logout.

    python cli.py login  [--host URL]   start a login, verify it in the browser, paste the code
    python cli.py whoami [--host URL]   show who the stored token belongs to
    python cli.py logout [--host URL]   forget the stored token

The temporary token is kept in $PENSTOCK_CONFIG_DIR, else $XDG_CONFIG_HOME/penstock, else
~/.config/penstock, as token.json with mode 0600; --config-dir overrides all of them.
"""
import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

DEFAULT_HOST = 'http://127.0.0.1:5000'
TOKEN_FILE = 'token.json'
TIMEOUT = 30


class Failure(Exception):
    """Something the person must fix; the message says what."""


def main(argv=None):
    options = parse_args(argv)
    try:
        return options.command(options)
    except Failure as failure:
        print(f'Error: {failure}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print('\nCancelled.', file=sys.stderr)
        return 130


def parse_args(argv):
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument('--host', help='the Penstock server, e.g. https://penstock.example '
                                       '(login: default $PENSTOCK_HOST or ' + DEFAULT_HOST +
                                       '; whoami/logout: the host you logged in to)')
    shared.add_argument('--config-dir', help='where the token is kept (default '
                                             '$PENSTOCK_CONFIG_DIR or ~/.config/penstock)')
    parser = argparse.ArgumentParser(prog='cli.py', description='Penstock command-line client.')
    commands = parser.add_subparsers(title='commands', required=True, metavar='COMMAND')
    for name, function, summary in (
            ('login', login, 'log in through the browser and store a temporary token'),
            ('whoami', whoami, 'show the user the stored token belongs to'),
            ('logout', logout, 'forget the stored token')):
        command = commands.add_parser(name, parents=[shared], help=summary,
                                      description=summary[0].upper() + summary[1:] + '.')
        command.set_defaults(command=function)
    return parser.parse_args(argv)


def login(options):
    """Start a login request, wait for the code from the browser, store the token."""
    host = normalize_host(options.host or os.environ.get('PENSTOCK_HOST') or DEFAULT_HOST)
    status, started = call('POST', host, '/api/v0/login/token')
    if status != 201:
        raise Failure(problem_text(started, f'the server answered {status} to a login request'))
    print('Open this URL in your browser, check the request and press Verify:', flush=True)
    print(f'  {started["url"]}', flush=True)
    print('Then enter the 6-digit code it shows you.', flush=True)
    path = '/api/v0/login/token/' + urllib.parse.quote(started['id'], safe='')
    while True:
        code = read_code()
        status, answer = call('GET', host, path + '?' + urllib.parse.urlencode({'code': code}))
        if status == 200:
            break
        if status in (400, 409):  # a wrong or malformed code, or not verified yet
            print(problem_text(answer, 'That code was not accepted.'), file=sys.stderr,
                  flush=True)
            if any(e.get('message', '').endswith('no attempts left')
                   for e in answer.get('validation_errors', [])):
                raise Failure('Too many wrong codes: this login request has ended. '
                              'Run "cli.py login" again.')
            continue
        if status == 404:
            raise Failure('This login request has ended (declined, expired, used, or too many '
                          'wrong codes). Run "cli.py login" again.')
        raise Failure(problem_text(answer, f'the server answered {status}'))
    save_token(config_dir(options), {'host': host, 'token': answer['token'],
                                     'expires_at': answer.get('expires_at')})
    status, actor = call('GET', host, '/api/v0/actor', answer['token'])
    who = actor.get('handle', '?') if status == 200 else '?'
    print(f'Logged in to {host} as {who}. The token expires at {answer.get("expires_at")}.')
    return 0


def read_code():
    try:
        line = input('Code: ')
    except EOFError:
        raise Failure('No code entered. Run "cli.py login" again when you have it.') from None
    return ''.join(line.split())


def whoami(options):
    """Ask the server who the stored token belongs to."""
    stored = load_token(config_dir(options), options.host)
    status, body = call('GET', stored['host'], '/api/v0/actor', stored['token'])
    if status == 401:
        raise Failure('The server refused the stored token (it expired, or authentication '
                      'was reset). Run "cli.py login" again.')
    if status != 200:
        raise Failure(problem_text(body, f'the server answered {status}'))
    name = f' ({body["display_name"]})' if body.get('display_name') else ''
    print(f'{body["handle"]}{name} on {stored["host"]}')
    return 0


def logout(options):
    """Forget the stored token. (It stays valid on the server until it expires or is reset.)"""
    path = os.path.join(config_dir(options), TOKEN_FILE)
    load_token(config_dir(options), options.host)
    os.remove(path)
    print('Logged out: the stored token was deleted from ' + path + '.')
    return 0


def normalize_host(host):
    parts = urllib.parse.urlsplit(host.strip())
    if parts.scheme not in ('http', 'https') or not parts.netloc:
        raise Failure(f'--host must be a URL like https://penstock.example, not "{host}".')
    return f'{parts.scheme}://{parts.netloc}{parts.path.rstrip("/")}'


def config_dir(options):
    if options.config_dir:
        return options.config_dir
    if os.environ.get('PENSTOCK_CONFIG_DIR'):
        return os.environ['PENSTOCK_CONFIG_DIR']
    base = os.environ.get('XDG_CONFIG_HOME') or os.path.join(os.path.expanduser('~'), '.config')
    return os.path.join(base, 'penstock')


def save_token(directory, stored):
    """Write the token readable by this user only, whatever the umask says."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = os.path.join(directory, TOKEN_FILE)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, 'w') as f:
        json.dump(stored, f)


def load_token(directory, host):
    path = os.path.join(directory, TOKEN_FILE)
    try:
        with open(path) as f:
            stored = json.load(f)
    except FileNotFoundError:
        raise Failure('Not logged in. Run "cli.py login --host URL" first.') from None
    except (OSError, ValueError) as error:
        raise Failure(f'Cannot read {path}: {error}. Run "cli.py logout" or delete it.') from None
    if host and normalize_host(host) != stored.get('host'):
        # The token is sent only to the server that issued it.
        raise Failure(f'You are logged in to {stored.get("host")}, not {normalize_host(host)}.')
    return stored


def call(method, host, path, token=None):
    """Make one API request; returns (status, parsed JSON body or {})."""
    request = urllib.request.Request(host + path, method=method,
                                     headers={'Accept': 'application/json'})
    if token:
        request.add_header('Authorization', 'Bearer ' + token)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return response.status, parse(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, parse(error.read())
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, 'reason', error)
        raise Failure(f'Cannot reach {host}: {reason}.') from None


def parse(raw):
    try:
        body = json.loads(raw or b'{}')
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def problem_text(body, fallback):
    return body.get('detail') or body.get('title') or fallback


if __name__ == '__main__':
    sys.exit(main())
