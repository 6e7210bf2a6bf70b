"""Lighthouse: accessibility, best practices and performance of Settings → Profile, Tokens and
Audit Log, for a logged-in user, as production serves them.

gunicorn serves the app on 127.0.0.1 with a fresh SQLite database and one user (bench/
page_weight.py's) whose account has a long display name, two tokens and a few dozen audit
records. Lighthouse (npm `lighthouse`, pinned in package.json) runs on the system Chromium
(CHROME_PATH, default /usr/bin/chromium), headless, with its default mobile emulation and
simulated throttling, sending the login's cookies with every request (--extra-headers).
Targets (issue 16): accessibility 100 and best practices 100 on each page; performance is
printed. Exits 1 when a target is not met (in quick mode, BENCH_QUICK=1, it only prints: one
page is all it audits).
"""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import QUICK, judged
from page_weight import HANDLE, ROOT, log_in, serve

import credentials  # noqa: E402  (the project's modules: page_weight put the root on the path)
import database  # noqa: E402
import models  # noqa: E402

LIGHTHOUSE = ROOT / 'node_modules' / '.bin' / 'lighthouse'
CHROME = os.environ.get('PENSTOCK_CHROMIUM', '/usr/bin/chromium')
CATEGORIES = ('accessibility', 'best-practices', 'performance')
TARGETS = {'accessibility': 100, 'best-practices': 100}
PAGES = {'Profile': 'profile', 'Tokens': 'tokens', 'Audit Log': 'audit'}


def fill_the_account():
    """A long name, two tokens (one inactive, one deleted before them) and a page of records."""
    with database.db.connection_context():
        user = models.User.get(models.User.handle == HANDLE)
        user.set_display_name('Anastasia Konstantinopoulou-Vandenberghe', ip='198.51.100.23')
        for _ in range(10):
            models.Preferences.change(user, {'community_updates': True}, ip='2001:db8::17')
            models.Preferences.change(user, {'community_updates': False}, via='email')
        token, _ = credentials.Token.issue(user, ip='203.0.113.77')
        credentials.Token.issue(user, ip='203.0.113.77')[0].remove(ip='203.0.113.77')
        credentials.Token.issue(user, ip='203.0.113.77')
        token.set_status('inactive', ip='198.51.100.23')
    database.db.close()


def audit(url, cookie, folder):
    """Lighthouse's scores (0–100) of `url`, by category; its problems in failing audits."""
    output = Path(folder) / 'report.json'
    command = [str(LIGHTHOUSE), url, '--quiet', '--output=json', f'--output-path={output}',
               '--only-categories=' + ','.join(CATEGORIES),
               '--chrome-flags=--headless=new --no-sandbox --disable-gpu',
               '--extra-headers=' + json.dumps({'Cookie': cookie})]
    for _ in range(2):
        result = subprocess.run(command, env={**os.environ, 'CHROME_PATH': CHROME},
                                capture_output=True, text=True, timeout=300)
        # Lighthouse's own flake: its trace sometimes misses the page's navigation start
        # (NO_NAVSTART, "Please run Lighthouse again"); a second run is what it asks for.
        if result.returncode == 0 or 'NO_NAVSTART' not in result.stderr:
            break
        print('  Lighthouse lost the trace (NO_NAVSTART); running it again.')
    if result.returncode != 0:
        raise SystemExit(f'lighthouse exited with {result.returncode}:\n{result.stderr[-2000:]}')
    report = json.loads(output.read_text())
    if report.get('runtimeError'):
        raise SystemExit(f'lighthouse could not audit {url}: {report["runtimeError"]}')
    if report['finalDisplayedUrl'] != url:  # a login page's scores would say nothing
        raise SystemExit(f'lighthouse was sent from {url} to {report["finalDisplayedUrl"]}')
    scores = {name: round(report['categories'][name]['score'] * 100) for name in CATEGORIES}
    failing = sorted({audit['id'] for name in TARGETS
                      for ref in report['categories'][name]['auditRefs'] if ref['weight']
                      for audit in [report['audits'][ref['id']]]
                      if audit['score'] is not None and audit['score'] < 1})
    return scores, failing


def main():
    if not LIGHTHOUSE.exists():
        raise SystemExit(f'{LIGHTHOUSE} is missing: run npm ci (make bench does)')
    if not os.access(CHROME, os.X_OK):
        raise SystemExit(f'Chromium not found at {CHROME} (set PENSTOCK_CHROMIUM)')
    met = True
    with tempfile.TemporaryDirectory(prefix='penstock-lighthouse-') as folder:
        process, port = serve(folder)
        try:
            fill_the_account()
            cookie = log_in(port)
            print('Lighthouse 12 (mobile emulation, simulated throttling), logged in; '
                  'targets: accessibility 100, best practices 100')
            for name, path in list(PAGES.items())[:1 if QUICK else None]:
                url = f'http://127.0.0.1:{port}/user/{HANDLE}/settings/{path}'
                scores, failing = audit(url, cookie, folder)
                ok = all(scores[category] >= target for category, target in TARGETS.items())
                met = met and ok
                print(f'  {name:<10} accessibility {scores["accessibility"]:>3}  best practices '
                      f'{scores["best-practices"]:>3}  performance {scores["performance"]:>3}  '
                      f'{judged(ok)}' + (f'  failing: {", ".join(failing)}' if failing else ''))
        finally:
            process.terminate()
            process.wait(10)
    if not QUICK and not met:
        sys.exit(1)


if __name__ == '__main__':
    main()
