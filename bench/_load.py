"""A small HTTP load generator for the benchmarks: threads, one connection per request.

wrk is not in this machine's Debian mirror, so this stands in for it. Gunicorn's sync workers
close the connection after every answer, so each request opens its own (as wrk's would be
re-opened too). Every run stops at whichever comes first: `seconds` or `max_requests`.
Only loopback addresses are accepted.
"""
import http.client
import threading
import time

LOOPBACK = ('127.0.0.1', 'localhost', '::1')


class Result:
    """Counts from one run: requests answered, their statuses, errors, elapsed seconds."""

    def __init__(self):
        self.ok = 0
        self.statuses = {}
        self.errors = 0
        self.elapsed = 0.0

    @property
    def rate(self):
        """Requests answered with the expected status per second."""
        return self.ok / self.elapsed if self.elapsed else 0.0


def run(host, port, requests, expect, threads=4, seconds=5.0, max_requests=50_000,
        timeout=10.0):
    """Send requests from `threads` threads until `seconds` pass or `max_requests` are sent.

    `requests` is a list of (method, path, body, headers); thread i sends them in turn, from
    position i, so alternating requests (a switch on, then off) really alternate."""
    if host not in LOOPBACK:
        raise ValueError(f'the load generator addresses loopback only, not {host}')
    result, lock = Result(), threading.Lock()
    sent = [0]
    deadline = time.monotonic() + seconds

    def take_turn():
        with lock:
            if sent[0] >= max_requests or time.monotonic() >= deadline:
                return False
            sent[0] += 1
            return True

    def worker(offset):
        position = offset
        while take_turn():
            method, path, body, headers = requests[position % len(requests)]
            position += 1
            connection = http.client.HTTPConnection(host, port, timeout=timeout)
            try:
                connection.request(method, path, body=body, headers=headers)
                response = connection.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                status = None
            finally:
                connection.close()
            with lock:
                if status is None:
                    result.errors += 1
                else:
                    result.statuses[status] = result.statuses.get(status, 0) + 1
                    result.ok += status == expect
    started = time.monotonic()
    workers = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(seconds + timeout + 5)
    result.elapsed = time.monotonic() - started
    return result
