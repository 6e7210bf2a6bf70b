"""Avatar images: checking an upload, cropping the avatar from it, and drawing default avatars."""
import colorsys
import contextlib
import ctypes
import io
import math
import random
import threading
import warnings
from dataclasses import dataclass

from PIL import Image, ImageCms, ImageDraw

UPLOAD_LIMIT = 10 * 1024 * 1024
PIXEL_LIMIT = 40_000_000
# The most one image's decoded pixels may take in memory. Pillow keeps a pixel of full colour
# (or of grey with alpha) in 4 bytes, palette and grey in 1, 16-bit grey in 2: this is
# 24 megapixels of full colour, while every palette or grey image within PIXEL_LIMIT fits. A
# larger JPEG is decoded at 1/2, 1/4 or 1/8 scale instead; a PNG cannot be, so it is refused.
DECODED_LIMIT = 96_000_000
LIMITS = 'JPEG or PNG, up to 10 MB and 40 megapixels (24 for a full-colour PNG).'
DECODES_AT_ONCE = 2  # images decoded at the same time in one process
DECODE_WAIT = 3  # seconds an image waits for its turn before the answer is "busy"
BAND_BYTES = 2 * 1024 * 1024  # the most one band of rows takes once converted (see _shrunk)
WORKING_EDGE = 2048  # the crop step's working copy is at most this long on its long edge
# A smaller image's working copy is enlarged, by whole pixels, to about this on its short side,
# so that the crop step shows it large enough to choose from.
SHOWN_EDGE = 240
LARGE, SMALL = 460, 96
RESULT = 2 * SMALL  # the crop step's preview of the avatar: 96 CSS pixels on a 2× screen
QUALITY = 85
BACKGROUND = (238, 238, 238)  # what transparent pixels become: a neutral light grey
FORMATS = ('JPEG', 'PNG')
SIGNATURES = (b'\xff\xd8\xff', b'\x89PNG\r\n\x1a\n')

# Pillow warns at MAX_IMAGE_PIXELS and refuses at twice that; both become refusals here.
Image.MAX_IMAGE_PIXELS = PIXEL_LIMIT
warnings.simplefilter('error', Image.DecompressionBombWarning)


def _give_back_large_buffers():
    """Have glibc return a freed buffer of 4 MB or more (decoded pixels) to the system at once.

    By default it raises its mmap threshold to the size of each large block freed, so later
    blocks come from the heaps of the threads that decoded them and stay resident there:
    after a few concurrent uploads of large images, a process kept 80–230 MB it no longer
    used. Setting the threshold turns that adjustment off (mallopt(3), M_MMAP_THRESHOLD)."""
    try:
        ctypes.CDLL(None).mallopt(-3, 4 * 1024 * 1024)  # -3: M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc: its allocator keeps its own ways
        pass


_give_back_large_buffers()

SRGB = ImageCms.createProfile('sRGB')
# How Pillow's exif_transpose turns the stored pixels upright, by EXIF orientation.
UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
           4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
           6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
           8: Image.Transpose.ROTATE_90}


class BadImage(ValueError):
    """An upload that cannot become an avatar; the message says why, for the person."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message


class Busy(Exception):
    """Every turn to decode stayed taken for DECODE_WAIT seconds; nothing was done."""

    message = 'Penstock is busy with other images. Try again in a moment; nothing was changed.'
    retry_after = 5  # seconds to suggest before sending the image again (a turn takes ~1 s)

    def __init__(self):
        super().__init__(self.message)


_turns = threading.BoundedSemaphore(DECODES_AT_ONCE)


@contextlib.contextmanager
def turn():
    """Hold one of the DECODES_AT_ONCE turns to decode, so that the memory all of them take
    together stays bounded; raises Busy rather than queueing for longer than DECODE_WAIT."""
    if not _turns.acquire(timeout=DECODE_WAIT):
        raise Busy()
    try:
        yield
    finally:
        _turns.release()


@dataclass(frozen=True)
class Inspected:
    """An upload that decoded: its upright size and a JPEG working copy for the crop step."""
    width: int
    height: int
    preview: bytes
    preview_width: int
    preview_height: int


def inspect(data):
    """Decode an upload once, fully, and return its upright size and a working copy."""
    with turn():
        image = _open(data)
        orientation = _orientation(image)
        width, height = _upright_size(image.size, orientation)
        scale = min(1.0, WORKING_EDGE / max(image.size))
        _decode(image, (math.ceil(image.width * scale), math.ceil(image.height * scale)))
        with image:
            preview = _shrunk(image, (0, 0) + image.size, _within(image.size, WORKING_EDGE),
                              Image.Resampling.BICUBIC, reducing_gap=2.0)
            icc = image.info.get('icc_profile')
        if orientation in UPRIGHT:
            preview = preview.transpose(UPRIGHT[orientation])
        preview = _enlarged(_to_srgb(_normal(preview), icc))
        buffer = io.BytesIO()
        preview.save(buffer, 'JPEG', quality=QUALITY)
    return Inspected(width, height, buffer.getvalue(), preview.width, preview.height)


def _enlarged(image):
    """`image` enlarged by a whole factor (each pixel a block, as it will be cropped) until its
    short side is SHOWN_EDGE or more, as far as WORKING_EDGE allows; a large one as it is."""
    factor = min(math.ceil(SHOWN_EDGE / min(image.size)), WORKING_EDGE // max(image.size))
    if factor <= 1:
        return image
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


def upscale_warning(width, height):
    """What to say before a `width`×`height` image is cropped, when even its largest square
    is smaller than the avatar made from it; else None."""
    if min(width, height) >= LARGE:
        return None
    return (f'This image is {width}×{height} pixels; your avatar is shown at up to '
            f'{LARGE}×{LARGE}, so it will be enlarged and may look blurry. '
            'A larger image gives a sharper avatar.')


def _on_working_copy(box, size, working_size):
    """`box` (x, y, side) in the pixels of an image of `size`, as (left, top, right, bottom)
    in those of its `working_size` working copy (each axis scaled on its own, as rounded)."""
    (x, y, side), (width, height), (across, down) = box, size, working_size
    return (min(x * across / width, across - 1), min(y * down / height, down - 1),
            min((x + side) * across / width, across), min((y + side) * down / height, down))


def crop_square(width, height, working_size, box):
    """The crop step's square without JavaScript: a PNG the size of the working copy, clear
    inside `box`, dimmed outside it, with a white outline and the circle the avatar shows."""
    check_box(width, height, *box)
    square = tuple(round(value) for value in _on_working_copy(box, (width, height), working_size))
    line = max(2, round(max(working_size) / 250))
    image = Image.new('LA', working_size, (0, 140))
    draw = ImageDraw.Draw(image)
    draw.rectangle(square, fill=(0, 0), outline=(255, 255), width=line)
    draw.ellipse(square, outline=(255, 170), width=max(1, line // 2))
    buffer = io.BytesIO()
    image.save(buffer, 'PNG', optimize=True)
    return buffer.getvalue()


def cropped_preview(working_copy, width, height, box):
    """What the avatar will show, cut from the crop step's JPEG `working_copy` of a
    `width`×`height` image by `box`: a RESULT px JPEG."""
    check_box(width, height, *box)
    with turn():
        with Image.open(io.BytesIO(working_copy), formats=('JPEG',)) as image:
            square = _on_working_copy(box, (width, height), image.size)
            result = image.convert('RGB').resize((RESULT, RESULT), Image.Resampling.LANCZOS,
                                                 box=square)
    buffer = io.BytesIO()
    result.save(buffer, 'JPEG', quality=QUALITY)
    return buffer.getvalue()


def check_box(width, height, x, y, size):
    """Refuse a crop square that does not lie inside a `width`×`height` image."""
    if size < 1 or x < 0 or y < 0 or x + size > width or y + size > height:
        raise BadImage(f'The crop square must lie inside the image ({width}×{height} pixels): '
                       'x and y at least 0, x + size at most the width, '
                       'y + size at most the height.')


def centred_box(width, height):
    """The largest square in the middle of a `width`×`height` image, as (x, y, size)."""
    size = min(width, height)
    return (width - size) // 2, (height - size) // 2, size


def avatar(data, box=None):
    """The avatar cropped from an upload as WebP (LARGE px, SMALL px); `box` is (x, y, size)
    in upright pixels, or None for the centred square."""
    with turn():
        image = _open(data)
        orientation = _orientation(image)
        width, height = _upright_size(image.size, orientation)
        x, y, size = box or centred_box(width, height)
        check_box(width, height, x, y, size)
        left, top, side = _stored_box(image.size, orientation, x, y, size)
        stored = image.size
        # A JPEG decodes at 1/2, 1/4 or 1/8 scale when the crop still has LARGE px after it.
        wanted = LARGE / size
        _decode(image, (math.ceil(image.width * wanted), math.ceil(image.height * wanted)))
        with image:
            # Each side of a reduced JPEG is rounded up on its own: scale each on its own.
            across, down = image.width / stored[0], image.height / stored[1]
            region = (left * across, top * down, (left + side) * across, (top + side) * down)
            large = _shrunk(image, region, (LARGE, LARGE), Image.Resampling.LANCZOS,
                            reducing_gap=3.0)
            icc = image.info.get('icc_profile')
        if orientation in UPRIGHT:
            large = large.transpose(UPRIGHT[orientation])
        large = _to_srgb(_normal(large), icc)
        small = large.resize((SMALL, SMALL), Image.Resampling.LANCZOS)
        return _webp(large), _webp(small)


def generated(seed):
    """A default avatar drawn from `seed`: a symmetric pattern of tiles in one hue,
    as WebP (LARGE px, SMALL px)."""
    rng = random.Random(seed)
    hue = rng.random()
    shades = [_colour(hue, lightness, 0.7) for lightness in (0.42, 0.55, 0.68)]
    paper = _colour(hue, 0.93, 0.5)
    cells, side = 5, 2 * LARGE  # drawn at twice the size, then reduced, for smooth edges
    step = side / cells
    image = Image.new('RGB', (side, side), paper)
    draw = ImageDraw.Draw(image)
    for row in range(cells):
        for column in range((cells + 1) // 2):
            if rng.random() < 0.25:
                continue
            fill, shape = rng.choice(shades), rng.randrange(5)
            if column == cells - 1 - column:  # the middle column is its own mirror image,
                shape %= 2  # so only a square or a circle keeps the pattern symmetric
            for col in {column, cells - 1 - column}:
                mirrored = col != column
                _tile(draw, col * step, row * step, step, shape, mirrored, fill)
    large = image.resize((LARGE, LARGE), Image.Resampling.LANCZOS)
    small = large.resize((SMALL, SMALL), Image.Resampling.LANCZOS)
    return _webp(large), _webp(small)


def _tile(draw, left, top, step, shape, mirrored, fill):
    right, bottom = left + step, top + step
    if shape == 0:
        draw.rectangle((left, top, right, bottom), fill=fill)
    elif shape == 1:
        draw.ellipse((left, top, right, bottom), fill=fill)
    elif shape in (2, 3):  # a half square; the mirrored tile drops the mirrored corner
        corners = [(left, top), (right, top), (right, bottom), (left, bottom)]
        dropped = {(2, False): 0, (2, True): 1, (3, False): 3, (3, True): 2}[shape, mirrored]
        draw.polygon([corner for index, corner in enumerate(corners) if index != dropped],
                     fill=fill)
    else:  # a quarter circle about the tile's outer top corner
        centre = right if mirrored else left
        draw.pieslice((centre - step, top - step, centre + step, top + step),
                      90 if mirrored else 0, 180 if mirrored else 90, fill=fill)


def _colour(hue, lightness, saturation):
    return tuple(round(channel * 255) for channel in colorsys.hls_to_rgb(hue, lightness,
                                                                         saturation))


def _open(data):
    """Open an upload by its content, reading only its header; refuse what is not allowed."""
    if not data:
        raise BadImage('The file is empty.')
    if len(data) > UPLOAD_LIMIT:
        raise BadImage('The file is larger than 10 MB. Choose a smaller image.')
    if not data.startswith(SIGNATURES):
        raise BadImage('Only JPEG and PNG images can be used; this file is neither.')
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadImage('The image has more than 40 megapixels. Choose a smaller image.') from None
    except Exception:  # Pillow reports a damaged header with many exception types
        raise BadImage('The file could not be read as an image; it may be damaged.') from None
    if image.width * image.height > PIXEL_LIMIT:
        raise BadImage('The image has more than 40 megapixels. Choose a smaller image.')
    needed = _decoded_bytes(image.mode, image.size)
    if image.format == 'PNG' and needed > DECODED_LIMIT:
        raise BadImage(f'The image is too large to work with: its {image.width}×{image.height} '
                       f'pixels need {math.ceil(needed / 1e6)} MB of memory, and the most is '
                       f'{DECODED_LIMIT // 1_000_000} MB (24 megapixels for a full-colour PNG). '
                       'Choose a smaller image, or save it as JPEG.')
    return image


def _decoded_bytes(mode, size):
    """The memory Pillow takes for pixels of `mode` at `size` (3 channels are kept in 4 bytes)."""
    each = 1 if mode in ('1', 'L', 'P') else 2 if mode.startswith('I;16') else 4
    return size[0] * size[1] * each


def _decode(image, size):
    """Decode the pixels. A JPEG decodes at the smallest of 1/2, 1/4 or 1/8 scale that still
    gives `size`, and at least as small as keeps it within DECODED_LIMIT."""
    if image.format == 'JPEG':
        least = next(scale for scale in (1, 2, 4, 8) if _decoded_bytes(
            image.mode, (-(-image.width // scale), -(-image.height // scale))) <= DECODED_LIMIT)
        # draft() takes the largest reduction that keeps both sides at least as asked.
        image.draft('RGB', (min(size[0], image.width // least),
                            min(size[1], image.height // least)))
    try:
        image.load()
    except Exception:  # truncated or corrupt data, reported by the decoder in many ways
        image.close()
        raise BadImage('The file could not be read as an image; '
                       'it may be damaged or incomplete.') from None


def _orientation(image):
    if image.format == 'PNG':
        # A PNG's EXIF may follow its pixels, so getexif() decodes them; decode here, where
        # damaged pixels are refused rather than taken for a file without EXIF.
        _decode(image, image.size)
    try:
        orientation = image.getexif().get(0x0112, 1)
    except Exception:  # unreadable EXIF counts as none
        return 1
    return orientation if orientation in UPRIGHT else 1


def _upright_size(size, orientation):
    return (size[1], size[0]) if orientation >= 5 else size


def _stored_box(size, orientation, x, y, side):
    """Map a square given in upright pixels onto the pixels as stored in the file."""
    width, height = size
    return {
        1: (x, y), 2: (width - x - side, y), 3: (width - x - side, height - y - side),
        4: (x, height - y - side), 5: (y, x), 6: (y, height - x - side),
        7: (width - y - side, height - x - side), 8: (width - y - side, x),
    }[orientation] + (side,)


def _within(size, edge):
    """`size` made to fit inside `edge`×`edge`, keeping its shape, as Pillow's thumbnail()."""
    scale = edge / max(size)
    return size if scale >= 1 else tuple(max(1, round(side * scale)) for side in size)


def _shrunk(image, box, size, resample, reducing_gap):
    """`box` (left, top, right, bottom) of the decoded `image`, resized to `size` and made
    normal (see _normal), a band of rows at a time: neither a converted full-size copy nor a
    full-size intermediate of the resize is ever held, only the image, one band and the
    result. An image in another mode is converted a band (and the rows its filter reads
    around it) at a time, before that band is resized."""
    left, top, right, bottom = box
    step_x, step_y = (right - left) / size[0], (bottom - top) / size[1]  # source px per result px
    # LANCZOS, Pillow's widest filter, reads 3 result pixels' worth on either side.
    reach_x, reach_y = 3 * max(step_x, 1) + 1, 3 * max(step_y, 1) + 1
    rows = max(1, int(BAND_BYTES / (4 * (right - left + 2 * reach_x) * max(step_y, 1))))
    normal = image.mode in ('RGB', 'L', 'CMYK') and 'transparency' not in image.info
    result = None
    for y in range(0, size[1], rows):
        band = (left, top + y * step_y, right, top + min(y + rows, size[1]) * step_y)
        if normal:
            source, x0, y0 = image, 0, 0
        else:
            x0, y0 = max(0, math.floor(band[0] - reach_x)), max(0, math.floor(band[1] - reach_y))
            source = _normal(image.crop((x0, y0, min(image.width, math.ceil(band[2] + reach_x)),
                                         min(image.height, math.ceil(band[3] + reach_y)))))
        part = source.resize((size[0], min(rows, size[1] - y)), resample,
                             box=(band[0] - x0, band[1] - y0, band[2] - x0, band[3] - y0),
                             reducing_gap=reducing_gap)
        if result is None:
            result = Image.new(part.mode, size)
        result.paste(part, (0, y))
    return result


def _normal(image):
    """The image as RGB or CMYK with any transparency laid over BACKGROUND."""
    if image.mode.startswith('I'):  # 16-bit grey: scale down rather than clip
        image = image.convert('I').point(lambda value: value * (1 / 257)).convert('L')
    if image.mode == '1':
        image = image.convert('L')
    if image.mode in ('P', 'PA', 'LA') or 'transparency' in image.info:
        image = image.convert('RGBA')
    if image.mode == 'RGBA':
        flat = Image.new('RGB', image.size, BACKGROUND)
        flat.paste(image, mask=image.getchannel('A'))
        return flat
    if image.mode in ('RGB', 'CMYK'):
        return image
    return image.convert('RGB')


def _to_srgb(image, icc):
    """Convert from the file's colour profile to sRGB; without a usable profile, as is."""
    if icc:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            return ImageCms.profileToProfile(image, source, SRGB, outputMode='RGB')
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
            pass
    return image.convert('RGB')


def _webp(image):
    """Encode from pixels only: no EXIF, XMP, ICC profile or comment goes along."""
    clean = Image.frombytes('RGB', image.size, image.convert('RGB').tobytes())
    buffer = io.BytesIO()
    clean.save(buffer, 'WEBP', quality=QUALITY, method=4)
    return buffer.getvalue()
