"""Image files the avatar tests send, made in memory: hostile ones byte by byte (the HOSTILE
corpus, each with the message it is refused with), odd but real ones with Pillow (MODES), and
pictures whose every part can be told apart after a crop (quadrants)."""
import functools
import io
import struct
import zlib

import pytest
from PIL import Image, ImageCms, ImageOps, features

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
