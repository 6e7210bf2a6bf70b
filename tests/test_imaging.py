"""The avatar image pipeline on its own: what it refuses, and what comes out of what it takes.

Every file is made in memory (tests/images.py): hostile ones byte by byte, images with Pillow."""
import contextlib
import functools
import io
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageFilter, JpegImagePlugin

import imaging
from tests.images import (
    BLACK_AND_WHITE,
    BLUE,
    BUSY,
    COLOUR_AND_ALPHA,
    FULL_COLOUR,
    GREEN,
    GREY_16_BIT,
    HOSTILE,
    MODES,
    OUTSIDE,
    PALETTE,
    RED,
    SRGB_PROFILE,
    STORED,
    XMP,
    YELLOW,
    assert_shows,
    blank_png,
    encoded,
    hostile,
    hostile_file,
    jpeg_claiming,
    near,
    oriented_jpeg,
    quadrants,
)


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
