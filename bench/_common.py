"""What every benchmark script shares: the quick mode CI runs, and how a target is judged.

`BENCH_QUICK=1 make bench` runs a short round of each benchmark (fewer repeats, smaller
inputs) so that CI notices a benchmark that no longer runs. Its figures are printed, but a
round that short says nothing about a target, so none is judged.
"""
import os

QUICK = os.environ.get('BENCH_QUICK', '').strip() not in ('', '0')


def quick_or(full, quick):
    """`quick` in quick mode, else `full`: how much of a benchmark to run."""
    return quick if QUICK else full


def judged(met):
    """What to print for a target: MET or NOT MET, or that a quick run does not judge it."""
    if QUICK:
        return 'not judged (quick run)'
    return 'MET' if met else 'NOT MET'
