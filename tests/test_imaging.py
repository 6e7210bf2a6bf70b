"""The avatar image pipeline on its own: what it refuses, and what comes out of what it takes.

Every file here is made by the test, in memory: hostile ones byte by byte, images with Pillow."""
import contextlib
import functools
import io
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageCms, ImageFilter, ImageOps, JpegImagePlugin, features

import imaging

EMPTY = 'The file is empty.'
NEITHER = 'Only JPEG and PNG images can be used; this file is neither.'
UNREADABLE = 'The file could not be read as an image; it may be damaged.'
DAMAGED = 'The file could not be read as an image; it may be damaged or incomplete.'
TOO_MANY_PIXELS = 'The image has more than 40 megapixels. Choose a smaller image.'
TOO_LARGE = 'The file is larger than 10 MB. Choose a smaller image.'
BUSY = 'Penstock is busy with other images. Try again in a moment; nothing was changed.'
TOO_MUCH_MEMORY = ('The image is too large to work with: its {}×{} pixels need {} MB of memory, '
                   'and the most is 96 MB (24 megapixels for a full-colour PNG). Choose a '
                   'smaller image, or save it as JPEG.')
OUTSIDE = ('The crop square must lie inside the image ({}×{} pixels): x and y at least 0, '
           'x + size at most the width, y + size at most the height.')

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
SRGB_PROFILE = ImageCms.ImageCmsProfile(ImageCms.createProfile('sRGB')).tobytes()
XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
       b'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
       b'xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/" photoshop:City="Amsterdam"/>'
       b'</rdf:RDF></x:xmpmeta>')

RED, GREEN, BLUE, YELLOW = (220, 40, 40), (40, 170, 60), (40, 70, 220), (240, 200, 40)


# Making files

def encoded(image, format, **options):
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


def chunk(kind, data, crc=None):
    """A PNG chunk; `crc` overrides the right checksum."""
    crc = zlib.crc32(kind + data) if crc is None else crc
    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', crc)


def png(width, height, pixels=b'', depth=8, colour=0, before_pixels=b'', header_crc=None):
    """A PNG written chunk by chunk, saying whatever its header is told to say."""
    header = struct.pack('>IIBBBBB', width, height, depth, colour, 0, 0, 0)
    return (PNG_SIGNATURE + chunk(b'IHDR', header, header_crc) + before_pixels
            + chunk(b'IDAT', pixels) + chunk(b'IEND', b''))


# PNG colour types: (colour type, channels, bit depth, chunks before the pixels)
BLACK_AND_WHITE = (0, 1, 1, b'')
GREY_16_BIT = (0, 1, 16, b'')
PALETTE = (3, 1, 8, chunk(b'PLTE', bytes(range(256)) * 3))
FULL_COLOUR = (2, 3, 8, b'')
GREY_AND_ALPHA = (4, 2, 8, b'')
COLOUR_AND_ALPHA = (6, 4, 8, b'')


def blank_png(width, height, kind=BLACK_AND_WHITE):
    """A valid blank PNG of any size and colour type, compressed a row block at a time:
    kilobytes for hundreds of megapixels, without ever holding the pixels."""
    colour, channels, depth, before_pixels = kind
    row = bytes(1 + (width * channels * depth + 7) // 8)  # the filter byte, then the samples
    squeeze = zlib.compressobj(9)
    parts = [squeeze.compress(row * 1000) for _ in range(height // 1000)]
    parts += [squeeze.compress(row * (height % 1000)), squeeze.flush()]
    return png(width, height, b''.join(parts), depth, colour, before_pixels)


def jpeg_claiming(width, height, progressive=False):
    """A small JPEG whose frame header (SOF) is patched to claim `width`×`height`."""
    data = bytearray(encoded(Image.new('RGB', (16, 16), 'white'), 'JPEG',
                             progressive=progressive))
    sof = data.index(b'\xff\xc2' if progressive else b'\xff\xc0')
    struct.pack_into('>HH', data, sof + 5, height, width)  # after marker, length, precision
    return bytes(data)


def noise(size=(200, 150)):
    return Image.effect_noise(size, 60).convert('RGB')


def half(data):
    return data[:len(data) // 2]


def compressed_chunk(kind, size):
    """A PNG text or profile chunk whose compressed value inflates to `size` bytes."""
    return chunk(kind, b'k\x00\x00' + zlib.compress(bytes(size), 9))


def other_format(format, **options):
    return lambda: encoded(Image.new('RGB', (32, 24), RED), format, **options)


def rows_of_zeros(width, height):
    return zlib.compress(bytes((width + 1) * height))


def padded_to(size):
    """A valid JPEG followed by zeros up to `size` bytes (decoders ignore the tail)."""
    head = encoded(noise(), 'JPEG')
    return lambda: head + bytes(size - len(head))


# name: (how to make the file, the message it is refused with)
HOSTILE = {
    'zero-bytes': (lambda: b'', EMPTY),
    'nul-bytes': (lambda: bytes(100), NEITHER),
    'gif-named-png': (other_format('GIF'), NEITHER),
    'animated-gif-named-png': (lambda: encoded(
        Image.new('RGB', (32, 24), RED), 'GIF', save_all=True,
        append_images=[Image.new('RGB', (32, 24), BLUE)]), NEITHER),
    'webp-named-png': (other_format('WEBP'), NEITHER),
    'lossless-webp-named-png': (other_format('WEBP', lossless=True), NEITHER),
    'avif-named-png': (other_format('AVIF'), NEITHER),
    'bmp-named-png': (other_format('BMP'), NEITHER),
    'tiff-named-png': (other_format('TIFF'), NEITHER),
    'ico-named-png': (other_format('ICO'), NEITHER),
    'ppm-named-png': (other_format('PPM'), NEITHER),
    'qoi-named-png': (other_format('QOI'), NEITHER),
    'pdf-named-png': (other_format('PDF'), NEITHER),
    'svg-named-png': (lambda: b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9">'
                              b'<script>alert(1)</script></svg>', NEITHER),
    'html-named-png': (lambda: b'<!doctype html><html><body><script>alert(1)</script>',
                       NEITHER),
    'text-named-png': (lambda: b'Just some words.\n', NEITHER),
    'png-signature-alone': (lambda: PNG_SIGNATURE, UNREADABLE),
    'jpeg-signature-alone': (lambda: b'\xff\xd8\xff', UNREADABLE),
    'png-signature-then-html': (lambda: PNG_SIGNATURE + b'<html><script>alert(1)</script>',
                                UNREADABLE),
    'jpeg-signature-then-html': (lambda: b'\xff\xd8\xff\xe0<html><script>alert(1)</script>',
                                 UNREADABLE),
    'jpeg-cut-in-half': (lambda: half(encoded(noise(), 'JPEG')), DAMAGED),
    'progressive-jpeg-cut-in-half': (
        lambda: half(encoded(noise(), 'JPEG', progressive=True)), DAMAGED),
    'jpeg-without-its-end': (lambda: encoded(noise(), 'JPEG')[:-2], DAMAGED),
    'png-cut-in-half': (lambda: half(encoded(noise(), 'PNG')), DAMAGED),
    'png-pixels-garbage': (lambda: png(32, 24, b'garbage' * 50), DAMAGED),
    'png-header-bad-crc': (lambda: png(32, 24, rows_of_zeros(32, 24), header_crc=0),
                           UNREADABLE),
    'png-zero-width': (lambda: png(0, 24, rows_of_zeros(0, 24)), UNREADABLE),
    'jpeg-zero-size': (lambda: jpeg_claiming(0, 0), UNREADABLE),
    'png-bit-depth-3': (lambda: png(32, 24, rows_of_zeros(32, 24), depth=3), UNREADABLE),
    'png-colour-type-5': (lambda: png(32, 24, rows_of_zeros(32, 24), colour=5), UNREADABLE),
    'png-chunk-claiming-2-gb': (lambda: (
        PNG_SIGNATURE + chunk(b'IHDR', struct.pack('>IIBBBBB', 32, 24, 8, 0, 0, 0, 0))
        + struct.pack('>I', 0x7ffffff0) + b'tEXtk\x00v'), UNREADABLE),
    'png-profile-bomb': (lambda: png(32, 24, rows_of_zeros(32, 24),
                                     before_pixels=compressed_chunk(b'iCCP', 50_000_000)),
                         UNREADABLE),
    'png-text-bomb': (lambda: png(32, 24, rows_of_zeros(32, 24),
                                  before_pixels=compressed_chunk(b'zTXt', 50_000_000)),
                      UNREADABLE),
    'png-claiming-100000x100000': (lambda: png(100_000, 100_000, zlib.compress(bytes(100))),
                                   TOO_MANY_PIXELS),
    'png-claiming-1x40000001': (lambda: png(1, 40_000_001, zlib.compress(bytes(100))),
                                TOO_MANY_PIXELS),
    'jpeg-claiming-60000x60000': (lambda: jpeg_claiming(60_000, 60_000), TOO_MANY_PIXELS),
    'progressive-jpeg-claiming-60000x60000': (
        lambda: jpeg_claiming(60_000, 60_000, progressive=True), TOO_MANY_PIXELS),
    'jpeg-claiming-65535x65535': (lambda: jpeg_claiming(65_535, 65_535), TOO_MANY_PIXELS),
    'jpeg-claiming-8000x5001': (lambda: jpeg_claiming(8000, 5001), TOO_MANY_PIXELS),
    'png-8000x5001': (lambda: blank_png(8000, 5001), TOO_MANY_PIXELS),
    'png-decompression-bomb-20000x20000': (lambda: blank_png(20_000, 20_000),
                                           TOO_MANY_PIXELS),
    'jpeg-over-10-mb': (padded_to(imaging.UPLOAD_LIMIT + 1), TOO_LARGE),
    # Under 40 megapixels, but too large once decoded (4 bytes a pixel), and a PNG cannot be
    # decoded at a reduced scale.
    'rgba-png-6320x6320': (lambda: blank_png(6320, 6320, COLOUR_AND_ALPHA),
                           TOO_MUCH_MEMORY.format(6320, 6320, 160)),
    'grey-alpha-png-5000x5000': (lambda: blank_png(5000, 5000, GREY_AND_ALPHA),
                                 TOO_MUCH_MEMORY.format(5000, 5000, 100)),
    'rgb-png-4899x4899': (lambda: blank_png(4899, 4899, FULL_COLOUR),
                          TOO_MUCH_MEMORY.format(4899, 4899, 97)),
}
NEEDS_CODEC = {'avif-named-png': 'avif'}  # made only where this Pillow can write them


def hostile(*names):
    """The corpus as pytest parameters (all of it, or `names`), skipping what cannot be made."""
    return [pytest.param(name, id=name, marks=[pytest.mark.skipif(
        not features.check(NEEDS_CODEC[name]), reason=f'no {NEEDS_CODEC[name]} writer')]
        if name in NEEDS_CODEC else []) for name in names or HOSTILE]


@functools.cache
def hostile_file(name):
    """The bytes of the corpus case `name`, made once per run."""
    return HOSTILE[name][0]()


# Reading what comes out

def opened(webp):
    image = Image.open(io.BytesIO(webp))
    image.load()
    return image


def assert_avatar_images(images):
    """`images` are the (large, small) pair: RGB WebP, square, of the sizes the UI uses."""
    for data, side in zip(images, (imaging.LARGE, imaging.SMALL)):
        image = opened(data)
        assert (image.format, image.mode, image.size) == ('WEBP', 'RGB', (side, side))
    return [opened(data) for data in images]


def webp_chunks(data):
    """The four-letter names of a WebP file's RIFF chunks."""
    assert data[:4] == b'RIFF' and data[8:12] == b'WEBP'
    names, offset = [], 12
    while offset < len(data):
        name, length = data[offset:offset + 4], struct.unpack('<I', data[offset + 4:offset + 8])[0]
        names.append(name)
        offset += 8 + length + length % 2
    return names


def near(actual, expected, tolerance):
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected))


def quadrants(width, height):
    """An upright image in four colours: red, green / blue, yellow."""
    image = Image.new('RGB', (width, height), RED)
    image.paste(GREEN, (width // 2, 0, width, height // 2))
    image.paste(BLUE, (0, height // 2, width // 2, height))
    image.paste(YELLOW, (width // 2, height // 2, width, height))
    return image


def assert_shows(avatar, upright, box, margin=16, tolerance=24, grid=12):
    """Sampled on a grid, the `avatar` image shows `upright`'s square `box` (x, y, size),
    except within `margin` upright pixels of a colour edge, where resampling blurs."""
    x, y, size = box
    scale = size / avatar.width
    compared, wrong = 0, []
    for row in range(grid):
        for column in range(grid):
            out = ((column + 0.5) * avatar.width / grid, (row + 0.5) * avatar.height / grid)
            source = (x + out[0] * scale, y + out[1] * scale)
            if (abs(source[0] - upright.width / 2) < margin
                    or abs(source[1] - upright.height / 2) < margin):
                continue
            expected = upright.getpixel((int(source[0]), int(source[1])))
            actual = avatar.getpixel((int(out[0]), int(out[1])))
            compared += 1
            if not near(actual, expected, tolerance):
                wrong.append((out, actual, expected))
    assert compared >= grid * grid // 2
    assert wrong == []


# Refusals

@pytest.mark.parametrize('name', hostile())
def test_a_hostile_file_is_refused_with_a_message_for_the_person(name):
    data = hostile_file(name)
    for step in (imaging.inspect, imaging.avatar):
        with pytest.raises(imaging.BadImage) as refused:
            step(data)
        assert refused.value.message == HOSTILE[name][1], step.__name__


def test_exactly_40_megapixels_is_allowed():
    inspected = imaging.inspect(jpeg_claiming(8000, 5000))  # libjpeg greys the missing data
    assert (inspected.width, inspected.height) == (8000, 5000)
    assert max(inspected.preview_width, inspected.preview_height) <= imaging.WORKING_EDGE


def test_the_limits_are_said_in_words():
    assert imaging.LIMITS == ('JPEG or PNG, up to 10 MB and 40 megapixels '
                              '(24 for a full-colour PNG).')
    assert imaging.UPLOAD_LIMIT == 10 * 1024 * 1024 and imaging.PIXEL_LIMIT == 40_000_000
    assert imaging.DECODED_LIMIT == 24_000_000 * 4  # bytes: Pillow keeps RGB in 4 a pixel


def test_a_full_colour_png_of_exactly_24_megapixels_is_allowed():
    inspected = imaging.inspect(blank_png(6000, 4000, FULL_COLOUR))
    assert (inspected.width, inspected.height) == (6000, 4000)


# Memory: what decoding the largest images it takes costs the process, measured in a process
# of its own (Pillow's pixels are C allocations that tracemalloc cannot see).

MEASURE = """
import json, sys
from pathlib import Path
import imaging

def resident(field):  # kB in /proc/self/status: VmRSS now, VmHWM the peak
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith(field + ':'):
            return int(line.split()[1]) * 1024

data = sys.stdin.buffer.read()
try:
    Path('/proc/self/clear_refs').write_text('5')  # the peak starts again from here
except OSError:
    pass  # an older kernel: the peak of the imports counts too, which only overstates it
baseline = resident('VmRSS')
imaging.inspect(data)
imaging.avatar(data)
imaging.avatar(data, (0, 0, 460))
print(json.dumps({'peak': resident('VmHWM') - baseline, 'after': resident('VmRSS') - baseline}))
"""
MB = 1024 * 1024


def memory_used(data):
    """Peak and left-over resident memory, above the baseline after imports and reading the
    file, of a fresh process that inspects `data` and crops two avatars from it."""
    done = subprocess.run([sys.executable, '-c', MEASURE], input=data, capture_output=True,
                          check=True, cwd=Path(__file__).resolve().parent.parent, timeout=120)
    return json.loads(done.stdout)


@pytest.mark.slow  # decodes 40-megapixel images in a subprocess
@pytest.mark.parametrize('kind, size', [
    (PALETTE, (6320, 6320)),  # the review's file: 40 MB decoded, 160 MB once in RGBA
    (BLACK_AND_WHITE, (6320, 6320)),
    (GREY_16_BIT, (6320, 6320)),  # 80 MB decoded
    (COLOUR_AND_ALPHA, (6000, 4000)),  # 96 MB decoded: the most a PNG may take
], ids=['palette-40-megapixels', '1-bit-40-megapixels', 'grey-16-bit-40-megapixels',
        'rgba-24-megapixels'])
def test_the_largest_images_taken_cost_at_most_150_mb_and_give_it_back(kind, size):
    data = blank_png(*size, kind)
    assert len(data) < 200_000
    used = memory_used(data)
    assert used['peak'] <= 150 * MB, used
    assert used['after'] <= 30 * MB, used


@pytest.fixture
def scales(monkeypatch):
    """The scale (1, 2, 4 or 8) each JPEG is decoded at, as draft() chose it."""
    scales = []
    draft = JpegImagePlugin.JpegImageFile.draft

    def recording(image, mode, size):
        result = draft(image, mode, size)
        scales.append(image.decoderconfig[0])
        return result
    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, 'draft', recording)
    return scales


def test_a_jpeg_too_large_to_decode_whole_is_decoded_at_a_reduced_scale(scales):
    # 40 megapixels are 160 MB as RGB: over DECODED_LIMIT, so 1/2 scale, though a square of
    # 460 px would want every pixel.
    large, small = assert_avatar_images(imaging.avatar(jpeg_claiming(8000, 5000), (0, 0, 460)))
    assert scales == [2]


def test_a_jpeg_whose_sides_reduce_unevenly_is_cropped_inside_it():
    # At 1/8 scale 7740 px become 968 (967.5 rounded up) and 5160 exactly 645: the crop square
    # must be scaled on each side by its own factor to stay inside the reduced image.
    assert_avatar_images(imaging.avatar(jpeg_claiming(7740, 5160)))


@pytest.mark.parametrize('mode', ['P', 'RGBA', 'LA', 'RGB', 'L', '1'])
@pytest.mark.parametrize('box, size, resample', [
    ((100, 100, 800, 800), (460, 460), Image.Resampling.LANCZOS),  # as avatar() crops
    ((0, 0, 1200, 800), (1000, 667), Image.Resampling.BICUBIC),  # as inspect() shrinks
    ((150.5, 20.25, 250.5, 120.25), (460, 460), Image.Resampling.LANCZOS),  # enlarged
], ids=['avatar', 'working-copy', 'enlarged'])
def test_an_image_shrunk_band_by_band_is_the_same_as_in_one_piece(monkeypatch, mode, box, size,
                                                                   resample):
    upright = quadrants(1200, 800)
    # Detail whose resampling never leaves 0–255: Pillow may run a band's two passes in the
    # other order, and clipping between them would differ in the last bits.
    upright.paste(Image.effect_noise((600, 400), 20).convert('RGB'), (300, 200))
    image = Image.open(io.BytesIO(encoded(upright.convert(mode), 'PNG')))
    image.load()
    monkeypatch.setattr(imaging, 'BAND_BYTES', 1 << 40)  # one band
    whole = imaging._shrunk(image, box, size, resample, reducing_gap=3.0)
    monkeypatch.setattr(imaging, 'BAND_BYTES', 50_000)  # bands of a few rows
    banded = imaging._shrunk(image, box, size, resample, reducing_gap=3.0)
    assert banded.size == whole.size == size
    difference = ImageChops.difference(whole.convert('RGB'), banded.convert('RGB'))
    assert max(high for _, high in difference.getextrema()) <= 1  # rounding, no seams


# Turns: how many images are decoded at once

def test_at_most_decodes_at_once_turns_are_held_and_the_next_is_busy(monkeypatch):
    monkeypatch.setattr(imaging, 'DECODE_WAIT', 0)
    data = encoded(quadrants(300, 200), 'PNG')
    with contextlib.ExitStack() as held:
        for _ in range(imaging.DECODES_AT_ONCE):
            held.enter_context(imaging.turn())
        for step in (imaging.inspect, imaging.avatar):
            with pytest.raises(imaging.Busy) as busy:
                step(data)
            assert busy.value.message == BUSY
    assert imaging.inspect(data).width == 300  # given back, a turn is free again


@pytest.mark.parametrize('x, y, size', [
    (-1, 0, 100), (0, -1, 100), (101, 0, 100), (0, 1, 100), (0, 0, 0), (0, 0, -5),
    (150, 0, 100), (0, 0, 201),
], ids=['negative-x', 'negative-y', 'past-the-right', 'past-the-bottom', 'zero-size',
        'negative-size', 'outside', 'larger-than-the-image'])
def test_a_crop_square_not_inside_the_image_is_refused(x, y, size):
    with pytest.raises(imaging.BadImage) as refused:
        imaging.check_box(200, 100, x, y, size)
    assert refused.value.message == OUTSIDE.format(200, 100)


def test_a_crop_square_touching_the_edges_is_allowed():
    imaging.check_box(200, 100, 100, 0, 100)
    imaging.check_box(200, 100, 0, 0, 1)
    imaging.check_box(200, 100, 199, 99, 1)


def test_avatar_refuses_a_crop_square_outside_the_upright_image():
    data = encoded(quadrants(300, 200), 'PNG')
    with pytest.raises(imaging.BadImage) as refused:
        imaging.avatar(data, (150, 0, 200))
    assert refused.value.message == OUTSIDE.format(300, 200)


def test_the_centred_box_is_the_largest_middle_square():
    assert imaging.centred_box(1200, 800) == (200, 0, 800)
    assert imaging.centred_box(800, 1201) == (0, 200, 800)
    assert imaging.centred_box(5, 5) == (0, 0, 5)


# Metadata and orientation

# For each EXIF orientation, the transposition that stores an upright image so that a viewer
# applying the tag shows it upright again (the fixture checks this with Pillow's own reading).
STORED = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
          4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
          6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
          8: Image.Transpose.ROTATE_270}


def oriented_jpeg(upright, orientation, **options):
    """`upright` stored as a JPEG with EXIF `orientation`, as a camera held sideways would."""
    stored = upright if STORED[orientation] is None else upright.transpose(STORED[orientation])
    exif = options.pop('exif', Image.Exif())
    exif[0x0112] = orientation
    data = encoded(stored, 'JPEG', quality=95, exif=exif, **options)
    shown = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    assert shown.size == upright.size and near(shown.getpixel((5, 5)), upright.getpixel((5, 5)),
                                               12)
    return data


def test_metadata_is_dropped_and_the_orientation_applied():
    upright = quadrants(600, 400)
    exif = Image.Exif()
    exif[0x010F] = 'SpyCam'  # Make
    exif.get_ifd(0x8825).update({1: 'N', 2: (52.0, 22.0, 30.0), 3: 'E', 4: (4.0, 53.0, 1.5)})
    data = oriented_jpeg(upright, 6, exif=exif, xmp=XMP, comment=b'taken at home',
                         icc_profile=SRGB_PROFILE)
    original = Image.open(io.BytesIO(data))
    assert {'exif', 'xmp', 'comment', 'icc_profile'} <= set(original.info)
    assert original.getexif().get_ifd(0x8825)[1] == 'N' and original.size == (400, 600)

    images = imaging.avatar(data, None)
    for data_out, image in zip(images, assert_avatar_images(images)):
        assert not {'exif', 'xmp', 'comment', 'icc_profile'} & set(image.info)
        assert len(image.getexif()) == 0
        assert webp_chunks(data_out) in ([b'VP8 '], [b'VP8L'])  # no VP8X, EXIF, XMP, ICCP
        for secret in (b'Exif', b'GPS', b'xmp', b'http://ns.adobe', b'SpyCam', b'taken at home',
                       b'Amsterdam'):
            assert secret not in data_out
    assert_shows(opened(images[0]), upright, imaging.centred_box(600, 400))


@pytest.mark.parametrize('orientation', range(1, 9))
def test_every_exif_orientation_gives_the_same_upright_avatar(orientation):
    upright = quadrants(600, 400)
    data = oriented_jpeg(upright, orientation)
    inspected = imaging.inspect(data)
    assert (inspected.width, inspected.height) == (600, 400)
    assert_shows(Image.open(io.BytesIO(inspected.preview)), upright, (0, 0, 600))
    for box in [(310, 10, 180), (20, 220, 160), None]:
        large, small = assert_avatar_images(imaging.avatar(data, box))
        assert_shows(large, upright, box or (100, 0, 400))
        assert_shows(small, upright, box or (100, 0, 400))


def test_a_png_with_an_exif_orientation_is_turned_upright_too():
    upright = quadrants(600, 400)
    exif = Image.Exif()
    exif[0x0112] = 8
    data = encoded(upright.transpose(STORED[8]), 'PNG', exif=exif)
    assert Image.open(io.BytesIO(data)).size == (400, 600)
    inspected = imaging.inspect(data)
    assert (inspected.width, inspected.height) == (600, 400)
    assert_shows(opened(imaging.avatar(data, (310, 10, 180))[0]), upright, (310, 10, 180))


def test_an_unreadable_orientation_counts_as_upright():
    upright = quadrants(300, 200)
    exif = Image.Exif()
    exif[0x0112] = 42
    data = encoded(upright, 'JPEG', quality=95, exif=exif)
    assert (imaging.inspect(data).width, imaging.inspect(data).height) == (300, 200)
    assert_shows(opened(imaging.avatar(data)[0]), upright, (50, 0, 200))


# Crop correctness

QUADRANT_BOXES = {'red': (100, 0, 400), 'green': (700, 0, 400), 'blue': (100, 400, 400),
                  'yellow': (700, 400, 400)}


@pytest.mark.parametrize('format', ['PNG', 'JPEG'])
@pytest.mark.parametrize('quadrant', QUADRANT_BOXES)
def test_cropping_one_quadrant_gives_only_its_colour(format, quadrant):
    upright = quadrants(1200, 800)
    box = QUADRANT_BOXES[quadrant]
    large, small = assert_avatar_images(imaging.avatar(encoded(upright, format, quality=95), box))
    colour = dict(red=RED, green=GREEN, blue=BLUE, yellow=YELLOW)[quadrant]
    for image in (large, small):
        # the whole square but for the rows at a quadrant edge, which resampling blurs
        edge = image.height // 25
        for x in range(0, image.width, image.width // 12):
            for y in range(edge, image.height - edge, image.height // 12):
                assert near(image.getpixel((x, y)), colour, 20), (x, y)


@pytest.mark.parametrize('format', ['PNG', 'JPEG'])
def test_the_default_crop_is_the_centred_square(format):
    upright = quadrants(1200, 800)
    large, small = assert_avatar_images(imaging.avatar(encoded(upright, format, quality=95)))
    assert_shows(large, upright, (200, 0, 800))
    assert_shows(small, upright, (200, 0, 800))
    assert near(large.getpixel((100, 100)), RED, 20)
    assert near(large.getpixel((360, 360)), YELLOW, 20)


@functools.cache
def large_jpeg(orientation):
    return oriented_jpeg(quadrants(4000, 2400), orientation)


@pytest.mark.parametrize('orientation', [1, 6, 7])
@pytest.mark.parametrize('box', [(300, 100, 1100), (2300, 1300, 1000), (1500, 700, 1000),
                                 (0, 0, 2400)], ids=['red', 'yellow', 'middle', 'largest'])
def test_a_large_jpeg_decoded_at_reduced_scale_is_cropped_where_asked(box, orientation):
    large, _ = assert_avatar_images(imaging.avatar(large_jpeg(orientation), box))
    assert_shows(large, quadrants(4000, 2400), box, margin=40)


def test_a_large_jpeg_is_decoded_at_the_smallest_scale_that_still_fills_the_avatar(scales):
    imaging.avatar(large_jpeg(1), (0, 0, 2400))
    imaging.avatar(large_jpeg(1), (0, 0, 1000))
    imaging.avatar(large_jpeg(1), (0, 0, 460))
    assert scales == [4, 2, 1]  # 2400 / 4 = 600 ≥ 460 > 2400 / 8; 1000 / 2 = 500 ≥ 460


def test_a_crop_smaller_than_the_avatar_is_enlarged():
    upright = quadrants(300, 200)
    large, small = assert_avatar_images(imaging.avatar(encoded(upright, 'PNG'), (100, 50, 100)))
    assert_shows(large, upright, (100, 50, 100), margin=4)


def test_the_working_copy_is_at_most_2048_pixels_and_upright():
    upright = quadrants(3000, 1000)
    inspected = imaging.inspect(encoded(upright, 'PNG'))
    assert (inspected.width, inspected.height) == (3000, 1000)
    preview = Image.open(io.BytesIO(inspected.preview))
    assert preview.format == 'JPEG'
    assert preview.size == (inspected.preview_width, inspected.preview_height) == (2048, 683)
    assert_shows(preview, upright, (0, 0, 3000), margin=30)


# Colour modes

def two_halves(mode, left, right, size=(200, 200), **info):
    image = Image.new(mode, size, left)
    image.paste(right, (size[0] // 2, 0, size[0], size[1]))
    image.info.update(info)
    return image


def palette_with_transparency():
    image = Image.new('P', (200, 200), 0)
    image.putpalette([255, 0, 0, 30, 60, 200] + [0] * 762)
    image.paste(1, (100, 0, 200, 200))
    return encoded(image, 'PNG', transparency=0)


def grey_ramp_16_bit():
    """A 16-bit grey PNG running from 0 at the left to 65535 at the right."""
    width, height = 256, 256
    row = b''.join(struct.pack('<H', round(x * 65535 / (width - 1))) for x in range(width))
    data = encoded(Image.frombytes('I;16', (width, height), row * height), 'PNG')
    assert data[24] == 16  # the IHDR's bit depth
    return data


MODES = {
    'cmyk-jpeg': (lambda: encoded(two_halves('CMYK', (0, 255, 255, 0), (255, 255, 0, 0)),
                                  'JPEG', quality=95),
                  [(0.1, (255, 0, 0)), (0.9, (0, 0, 255))]),
    'grey-jpeg': (lambda: encoded(two_halves('L', 30, 220), 'JPEG', quality=95),
                  [(0.1, (30, 30, 30)), (0.9, (220, 220, 220))]),
    'palette-png-with-transparency': (palette_with_transparency,
                                      [(0.1, imaging.BACKGROUND), (0.9, (30, 60, 200))]),
    'grey-16-bit-png': (grey_ramp_16_bit, [(0.1, (25, 25, 25)), (0.5, (128, 128, 128)),
                                           (0.9, (230, 230, 230))]),
    'grey-alpha-png': (lambda: encoded(two_halves('LA', (200, 0), (50, 255)), 'PNG'),
                       [(0.1, imaging.BACKGROUND), (0.9, (50, 50, 50))]),
    'rgba-png': (lambda: encoded(two_halves('RGBA', (255, 0, 0, 0), (0, 128, 0, 255)), 'PNG'),
                 [(0.1, imaging.BACKGROUND), (0.9, (0, 128, 0))]),
    'rgb-png-with-a-transparent-colour': (
        lambda: encoded(two_halves('RGB', (255, 255, 255), (10, 10, 90)), 'PNG',
                        transparency=(255, 255, 255)),
        [(0.1, imaging.BACKGROUND), (0.9, (10, 10, 90))]),
    '1-bit-png': (lambda: encoded(two_halves('1', 0, 1), 'PNG'),
                  [(0.1, (0, 0, 0)), (0.9, (255, 255, 255))]),
    'png-with-srgb-profile': (lambda: encoded(two_halves('RGB', RED, BLUE), 'PNG',
                                              icc_profile=SRGB_PROFILE),
                              [(0.1, RED), (0.9, BLUE)]),
    'jpeg-with-an-unusable-profile': (lambda: encoded(two_halves('RGB', RED, BLUE), 'JPEG',
                                                      quality=95, icc_profile=b'not a profile'),
                                      [(0.1, RED), (0.9, BLUE)]),
}


@pytest.mark.parametrize('mode', MODES)
def test_every_colour_mode_comes_out_as_rgb_webp(mode):
    make, expected = MODES[mode]
    images = imaging.avatar(make())
    for data, image in zip(images, assert_avatar_images(images)):
        assert 'icc_profile' not in image.info
        for fraction, colour in expected:
            point = (int(image.width * fraction), image.height // 2)
            assert near(image.getpixel(point), colour, 8), (fraction, image.getpixel(point))
    inspected = imaging.inspect(make())
    preview = Image.open(io.BytesIO(inspected.preview))
    assert preview.mode == 'RGB' and 'icc_profile' not in preview.info


# Generated defaults

def test_a_generated_avatar_is_the_same_for_a_seed_and_different_for_another():
    first = imaging.generated('seed one')
    assert imaging.generated('seed one') == first
    others = {imaging.generated(f'seed {n}')[0] for n in range(2, 8)}
    assert first[0] not in others and len(others) == 6
    large, small = assert_avatar_images(first)
    assert len(large.getcolors(1 << 16)) > 2  # a pattern, not a blank square


@pytest.mark.parametrize('seed', ['mirror', 'a', 'b', 'c'])
def test_a_generated_avatar_is_mirrored_left_to_right(seed):
    large = opened(imaging.generated(seed)[0])
    difference = ImageChops.difference(large, large.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    # Edges differ by a pixel (smoothing, WebP); a wrong shape differs over an area.
    areas = difference.convert('L').point(lambda value: 255 if value > 40 else 0)
    assert areas.filter(ImageFilter.MinFilter(5)).getbbox() is None
