"""What the HTTP benchmarks share: a throwaway database, gunicorn on loopback, measuring.

Servers are gunicorn sync workers bound to 127.0.0.1 on a free port, all with the same
settings; each is stopped (and killed if it lingers) when its `with` block ends.
"""
import contextlib
import http.client
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from cryptography.fernet import Fernet

import _load
from _common import judged, quick_or

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
WORKERS = 2
THREADS = 4  # client threads: enough to keep both workers busy
# Each comparison: a warm-up of each server, then ROUNDS rounds of SECONDS on each in turn.
ROUNDS, SECONDS, WARMUP = quick_or((5, 3.0, 1.0), (1, 0.5, 0.2))


def environment(folder):
    """The environment both the app and the baseline run with: one database in `folder`."""
    return {**os.environ,
            'DATABASE_URL': f'sqlite:///{folder}/penstock.db',
            'SECRET_KEY': 'bench secret key',
            'DATABASE_PASSWORD_KEYS': Fernet.generate_key().decode(),
            'SECURE_COOKIES': '0', 'GRAVATAR_ENABLED': '0', 'PROPAGATION_WORKER_THREAD': '0'}


def free_port():
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def gunicorn(app_spec, env, ready_path, workers=WORKERS):
    """Serve `app_spec` (module:callable in bench/) and yield its port once it answers."""
    port = free_port()
    command = [str(Path(sys.executable).parent / 'gunicorn'), '--workers', str(workers),
               '--worker-class', 'sync', '--bind', f'127.0.0.1:{port}',
               '--pythonpath', str(BENCH), '--log-level', 'warning', app_spec]
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f'gunicorn {app_spec} exited with {process.returncode}')
            try:
                connection = http.client.HTTPConnection('127.0.0.1', port, timeout=2)
                connection.request('GET', ready_path)
                connection.getresponse().read()
                connection.close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f'gunicorn {app_spec} did not answer within 30 s')
                time.sleep(0.1)
        yield port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def compare(ours, baseline, rounds=ROUNDS, seconds=SECONDS, warmup=WARMUP):
    """Requests per second of `ours` and of `baseline`, each (port, requests, expected status),
    measured in alternating rounds: (ours' rate in each round, the baseline's, every round's
    statuses)."""
    rates = {'ours': [], 'baseline': []}
    statuses = {'ours': {}, 'baseline': {}}
    for name, (port, requests, expect) in (('ours', ours), ('baseline', baseline)):
        _load.run('127.0.0.1', port, requests, expect, THREADS, warmup)
    for _ in range(rounds):
        for name, (port, requests, expect) in (('ours', ours), ('baseline', baseline)):
            result = _load.run('127.0.0.1', port, requests, expect, THREADS, seconds)
            rates[name].append(result.rate)
            for status, count in result.statuses.items():
                statuses[name][status] = statuses[name].get(status, 0) + count
            if result.errors:
                statuses[name]['connection errors'] = (
                    statuses[name].get('connection errors', 0) + result.errors)
    return rates['ours'], rates['baseline'], statuses


def verdict(label, ours, baseline, target, unit='req/s'):
    """One line: the median rate of each, the ratio and whether it meets the target; then each
    round's ratio and their spread, so the noise shows. A round measures both servers one after
    the other, so its ratio is what one moment's load gives them both: the ratio judged is the
    median round's, not the ratio of two medians that may come from different rounds."""
    rounds = [mine / theirs if theirs else 0.0 for mine, theirs in zip(ours, baseline)]
    ratio = statistics.median(rounds)
    met = ratio >= target
    print(f'  {label:42} {statistics.median(ours):8.0f} / {statistics.median(baseline):8.0f} '
          f'{unit}, ratio {ratio:5.3f}  (target ≥ {target}: {judged(met)})')
    print(f'  {"":42} rounds: ' + ' '.join(f'{value:.2f}' for value in rounds)
          + f'  (spread {min(rounds):.2f}–{max(rounds):.2f})')
    return met
