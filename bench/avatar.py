"""Avatar benchmark: Penstock's image pipeline against naive Pillow and libvips, same run.

Each (pipeline, input) runs in a fresh process: one cold run measures the peak resident
memory above the process's own baseline (Pillow's buffers are C allocations that
tracemalloc cannot see), then the median of REPEATS warm runs gives the time.
Then the largest images the app takes (files of a few KB that decode to tens of MB) go
through the whole pipeline, one at a time and four at once, for their peak memory and what
stays resident after. Prints tables and whether each target is met; exits 0 either way.
Quick mode (BENCH_QUICK=1, see _common.py): inputs a quarter of the size each way, one timed
run each, targets not judged.
"""
import io
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from PIL import Image, ImageDraw

from _common import QUICK, judged, quick_or

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import imaging  # noqa: E402  (the project's module, from the repository root)

REPEATS = quick_or(5, 1)
SCALE = quick_or(1, 4)  # inputs are this many times smaller each way in quick mode
QUALITY = imaging.QUALITY
INPUTS = {  # name: (size, format, save options, fine grain)
    'JPEG': ((6000 // SCALE, 4000 // SCALE), 'JPEG', {'quality': 90}, 0.08),
    'PNG': ((4000 // SCALE, 3000 // SCALE), 'PNG', {}, 0.0),
}
MB = 1024 * 1024


# ---- the pipelines: each takes the uploaded bytes and returns the encoded outputs ----

def save_penstock(data):
    """The Save step as the app does it: avatar() on the centred square."""
    return imaging.avatar(data)


def save_naive(data):
    """Full decode, centred square crop, LANCZOS to 460 and to 96, WebP at the same quality."""
    image = Image.open(io.BytesIO(data))
    image.load()
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    large = image.crop((left, top, left + side, top + side)).resize(
        (imaging.LARGE, imaging.LARGE), Image.Resampling.LANCZOS)
    small = large.resize((imaging.SMALL, imaging.SMALL), Image.Resampling.LANCZOS)
    return _webp(large), _webp(small)


def save_libvips(data):
    """libvips' thumbnail (shrink-on-load, centre crop) to 460, then 96 from it, as WebP."""
    import pyvips
    large = pyvips.Image.thumbnail_buffer(data, imaging.LARGE, crop='centre')
    small = large.thumbnail_image(imaging.SMALL)
    return (large.webpsave_buffer(Q=QUALITY, keep='none'),
            small.webpsave_buffer(Q=QUALITY, keep='none'))


def inspect_penstock(data):
    """The upload step as the app does it: inspect() makes the crop step's working copy."""
    return (imaging.inspect(data).preview,)


def inspect_naive(data):
    """Full decode, thumbnail to the working copy's edge, JPEG at the same quality."""
    image = Image.open(io.BytesIO(data))
    image.load()  # before thumbnail(), which would otherwise decode a JPEG at reduced scale
    image.thumbnail((imaging.WORKING_EDGE, imaging.WORKING_EDGE), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, 'JPEG', quality=QUALITY)
    return (buffer.getvalue(),)


def _webp(image):
    buffer = io.BytesIO()
    image.save(buffer, 'WEBP', quality=QUALITY, method=4)
    return buffer.getvalue()


PIPELINES = {
    ('save', 'penstock'): save_penstock,
    ('save', 'naive'): save_naive,
    ('save', 'libvips'): save_libvips,
    ('inspect', 'penstock'): inspect_penstock,
    ('inspect', 'naive'): inspect_naive,
}

# (step, input, compared with, the most Penstock's time may be as a multiple of it, why);
# a limit of None prints the ratio only.
TIME_TARGETS = [
    ('save', 'JPEG', 'libvips', 1.3, 'issue 4'),
    ('save', 'JPEG', 'naive', None, ''),
    ('save', 'PNG', 'naive', 1.0, 'issue 4'),
    ('save', 'PNG', 'libvips', None, ''),
    # Decode-once work: no more than a naive full decode + thumbnail + encode (10% for noise).
    ('inspect', 'JPEG', 'naive', 1.1, 'decode once'),
    ('inspect', 'PNG', 'naive', 1.1, 'decode once'),
]
MEMORY_TARGETS = [('save', 'JPEG', 40.0, 'issue 4')]  # peak MB above baseline, under this

# The largest images accepted, each the worst of its kind: (size, mode, format, why).
LARGE_INPUTS = {
    'palette PNG': ((6320, 6320), 'P', 'PNG', "the review's file: 40 MB decoded"),
    '1-bit PNG': ((6320, 6320), '1', 'PNG', '40 MB decoded'),
    '16-bit grey PNG': ((6320, 6320), 'I;16', 'PNG', '80 MB decoded'),
    'RGBA PNG': ((6000, 4000), 'RGBA', 'PNG', '96 MB decoded: the most a PNG may take'),
    'RGB JPEG': ((8000, 5000), 'RGB', 'JPEG', '160 MB whole: decoded at 1/2 or less'),
}
TOGETHER = 4  # uploads of the palette PNG at the same moment, as the review sent them
# (what, MB above the baseline, at most this, why)
LARGE_TARGETS = [('peak', 150.0, 'issue 12'), ('after', 16.0, 'issue 12: unchanged after')]


# ---- inputs ----

def picture(size, seed, grain):
    """Photo-like content: gradients, overlapping shapes, a soft texture and, if `grain`,
    per-pixel noise; a flat image would compress to nothing and decode unrealistically fast."""
    rng = random.Random(seed)
    width, height = size
    sketch = (width // 4, height // 4)  # drawn small and enlarged, for soft edges
    image = Image.merge('RGB', (Image.linear_gradient('L').resize(sketch),
                                Image.linear_gradient('L').rotate(90).resize(sketch),
                                Image.radial_gradient('L').resize(sketch)))
    draw = ImageDraw.Draw(image)
    for _ in range(150):
        x, y = rng.randrange(sketch[0]), rng.randrange(sketch[1])
        reach = rng.randrange(10, sketch[0] // 4)
        fill = tuple(rng.randrange(256) for _ in range(3))
        shape = rng.randrange(3)
        if shape == 0:
            draw.ellipse((x - reach, y - reach // 2, x + reach, y + reach // 2), fill=fill)
        elif shape == 1:
            draw.rectangle((x - reach, y - reach // 2, x + reach, y + reach // 2), fill=fill)
        else:
            draw.polygon([(x, y - reach), (x + reach, y + reach), (x - reach, y + reach // 3)],
                         fill=fill)
    texture = Image.merge('RGB', [_noise(rng, (sketch[0] // 8, sketch[1] // 8))
                                  for _ in range(3)])
    image = Image.blend(image, texture.resize(sketch, Image.Resampling.BICUBIC), 0.2)
    image = image.resize(size, Image.Resampling.BICUBIC)
    if grain:
        fine = _noise(rng, size)
        image = Image.blend(image, Image.merge('RGB', (fine, fine, fine)), grain)
    return image


def _noise(rng, size):
    return Image.frombytes('L', size, rng.randbytes(size[0] * size[1]))


def make_inputs(folder):
    """Write each input once into `folder`; return {name: path}."""
    paths = {}
    for seed, (name, (size, kind, options, grain)) in enumerate(INPUTS.items(), 1):
        path = Path(folder) / f'input.{kind.lower()}'
        picture(size, seed, grain).save(path, kind, **options)
        paths[name] = path
    return paths


def make_large_inputs(folder):
    """Write each large input once into `folder`, flat (its size is what costs memory, and a
    flat image compresses to a few KB, as a hostile one would); return {name: path}."""
    paths = {}
    for name, (size, mode, kind, _) in LARGE_INPUTS.items():
        path = Path(folder) / f'large-{len(paths)}.{kind.lower()}'
        Image.new(mode, size).save(path, kind, **({'compress_level': 9} if kind == 'PNG'
                                                  else {'quality': 90}))
        paths[name] = path
    return paths


# ---- measuring, in a fresh process per (pipeline, input) ----

def _status(field):
    """A field of /proc/self/status, in bytes (VmRSS: resident now; VmHWM: peak resident)."""
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith(field + ':'):
            return int(line.split()[1]) * 1024
    raise LookupError(field)


def _reset_peak():
    """Reset VmHWM to the current resident size; False where the kernel does not allow it."""
    try:
        Path('/proc/self/clear_refs').write_text('5')
        return True
    except OSError:
        return False


def measure(step, pipeline, path):
    """Run one pipeline on one input: peak memory of a cold run, then timed warm runs."""
    run = PIPELINES[step, pipeline]
    if pipeline == 'libvips':
        import pyvips
        pyvips.cache_set_max(0)  # otherwise repeats are answered from libvips' operation cache
    data = Path(path).read_bytes()
    reset = _reset_peak()
    baseline = _status('VmRSS')
    outputs = run(data)  # cold: also the warm-up
    peak = _status('VmHWM') - baseline
    sizes = [Image.open(io.BytesIO(output)).size for output in outputs]
    walls, cpus = [], []
    for _ in range(REPEATS):
        wall, cpu = time.perf_counter(), time.process_time()
        run(data)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return {'ms': statistics.median(walls) * 1000, 'cpu_ms': statistics.median(cpus) * 1000,
            'peak_mb': peak / MB, 'exact_peak': reset, 'bytes': [len(o) for o in outputs],
            'sizes': sizes}


def measure_large(path, together=1):
    """The whole pipeline on a large input (inspect, the centred avatar, a 460 px square at
    the corner), by `together` threads at the same moment: peak and left-over resident memory
    above the baseline, and how many were told "busy" (no turn to decode came in time)."""
    data = Path(path).read_bytes()
    reset = _reset_peak()
    baseline = _status('VmRSS')
    busy = []

    def upload():
        try:
            imaging.inspect(data)
            imaging.avatar(data)
            imaging.avatar(data, (0, 0, imaging.LARGE))
        except imaging.Busy:
            busy.append(1)
    threads = [threading.Thread(target=upload) for _ in range(together)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {'peak_mb': (_status('VmHWM') - baseline) / MB,
            'after_mb': (_status('VmRSS') - baseline) / MB, 'exact_peak': reset,
            'busy': len(busy)}


def measure_in_child(step, pipeline, path):
    """measure() in a fresh interpreter, so each peak starts from a clean process."""
    done = subprocess.run([sys.executable, __file__, '--measure', step, pipeline, str(path)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def measure_large_in_child(path, together=1):
    """measure_large() in a fresh interpreter."""
    done = subprocess.run([sys.executable, __file__, '--large', str(path), str(together)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def libvips_version():
    """libvips' version if pyvips and the library load here, else None."""
    try:
        import pyvips
        return f'libvips {pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}'
    except Exception:  # pyvips missing, or present without a loadable libvips
        return None


# ---- the report ----

def main():
    """Generate the inputs, measure every pipeline on each, print figures and verdicts."""
    vips = libvips_version()
    pipelines = [key for key in PIPELINES if vips or key[1] != 'libvips']
    with tempfile.TemporaryDirectory(prefix='penstock-bench-') as folder:
        paths = make_inputs(folder)
        inputs = {name: (Image.open(path).size, path.stat().st_size)
                  for name, path in paths.items()}
        results = {(step, pipeline, name): measure_in_child(step, pipeline, path)
                   for name, path in paths.items() for step, pipeline in pipelines}
        large_paths = make_large_inputs(folder)
        large = {name: dict(measure_large_in_child(path), bytes=path.stat().st_size)
                 for name, path in large_paths.items()}
        together = measure_large_in_child(large_paths['palette PNG'], TOGETHER)

    import PIL
    print('Avatar pipeline benchmark (bench/avatar.py)')
    print(f'Python {sys.version.split()[0]}, Pillow {PIL.__version__}, '
          f'{vips or "libvips: not installed — skipped"}; {os.cpu_count()} CPUs, '
          'load average {:.2f} {:.2f} {:.2f}'.format(*os.getloadavg()))
    for name, ((width, height), size) in inputs.items():
        print(f'Input {name}: {width}×{height}, {size / MB:.1f} MB (generated, seeded)')
    print(f'Time: median wall clock of {REPEATS} runs after a warm-up (cpu: all threads).')
    print('Peak: highest resident memory above the resident size after imports and reading '
          'the input,\n      one cold run in a fresh process per row.')
    if not all(result['exact_peak'] for result in results.values()):
        print('(This kernel did not let the peak be reset: peaks may be overstated.)')
    print()
    header = f'{"step":8} {"pipeline":9} {"input":5} {"median ms":>10} {"cpu ms":>8} ' \
             f'{"peak MB":>8}  output'
    print(header)
    print('-' * len(header))
    for (step, pipeline, name), result in sorted(results.items(), key=_row_order):
        output = ', '.join(f'{w}×{h} {size / 1024:.0f} kB'
                           for (w, h), size in zip(result['sizes'], result['bytes']))
        print(f'{step:8} {pipeline:9} {name:5} {result["ms"]:10.1f} {result["cpu_ms"]:8.1f} '
              f'{result["peak_mb"]:8.1f}  {output}')

    print()
    print('Ratios and targets (Penstock\'s pipeline against the comparison, same run):')
    met = checked = 0
    for step, name, other, limit, source in TIME_TARGETS:
        ours, theirs = results[step, 'penstock', name], results.get((step, other, name))
        label = f'{step} {name} time vs {other}'
        if theirs is None:
            print(f'  {label:34} skipped ({other} not installed)')
            continue
        ratio = ours['ms'] / theirs['ms']
        figures = f'  {label:34} {ours["ms"]:7.1f} / {theirs["ms"]:7.1f} ms = {ratio:5.2f}×'
        if limit is None:
            print(f'{figures}  (no target)')
            continue
        verdict = judged(ratio <= limit)
        met, checked = met + (ratio <= limit), checked + 1
        print(f'{figures}  target ≤ {limit:.2f}× ({source})  {verdict}')
    for step, name, limit, source in MEMORY_TARGETS:
        peak = results[step, 'penstock', name]['peak_mb']
        verdict = judged(peak < limit)
        met, checked = met + (peak < limit), checked + 1
        print(f'  {step + " " + name + " peak memory":34} {peak:7.1f} MB above baseline'
              f'{"":12}target < {limit:.0f} MB ({source})  {verdict}')

    print()
    print('The largest images taken, each through inspect, the centred avatar and a 460 px '
          'square,\nin a fresh process (MB above its baseline; "after": resident once done):')
    print(f'  {"input":17} {"size":>10} {"file":>9} {"peak MB":>8} {"after MB":>9}  why')
    for name, result in large.items():
        (width, height), _, _, why = LARGE_INPUTS[name]
        print(f'  {name:17} {f"{width}×{height}":>10} {result["bytes"] / 1024:7.1f} kB '
              f'{result["peak_mb"]:8.1f} {result["after_mb"]:9.1f}  {why}')
    print(f'  {TOGETHER} palette PNGs at once ({imaging.DECODES_AT_ONCE} decoded at a time, '
          f'{together["busy"]} told "busy"): peak {together["peak_mb"]:.1f} MB, '
          f'after {together["after_mb"]:.1f} MB')
    if not all(result['exact_peak'] for result in large.values()):
        print('  (This kernel did not let the peak be reset: peaks may be overstated.)')
    for what, limit, source in LARGE_TARGETS:
        key = f'{what}_mb'
        worst = max(large, key=lambda name: large[name][key])
        figure = large[worst][key]
        verdict = judged(figure <= limit)
        met, checked = met + (figure <= limit), checked + 1
        label = f'largest images {what} memory'
        print(f'  {label:34} {figure:7.1f} MB above baseline ({worst})'
              f'  target ≤ {limit:.0f} MB ({source})  {verdict}')
    result = (f'{checked} targets, not judged (quick run)' if QUICK
              else f'{met} of {checked} targets MET')
    print(f'Result: {result}' + ('' if vips else
          '; the libvips target was skipped (libvips: not installed — skipped)'))


def _row_order(item):
    (step, pipeline, name), _ = item
    return (list(INPUTS).index(name), step != 'save', list(PIPELINES).index((step, pipeline)))


if __name__ == '__main__':
    if sys.argv[1:2] == ['--measure']:
        print(json.dumps(measure(*sys.argv[2:5])))
    elif sys.argv[1:2] == ['--large']:
        print(json.dumps(measure_large(sys.argv[2], int(sys.argv[3]))))
    else:
        main()
