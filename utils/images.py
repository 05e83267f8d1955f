"""Decode uploaded image bytes into the 8-bit RGB array the face pipeline works on.

Every upload is treated as hostile until it has decoded: the format is decided by content
alone (upload names such as ``00000005.jpg?ssl=1`` say nothing), the pixel count is checked
before any pixel is decoded, and a truncated file is refused even when ``face_recognition``
has told Pillow to accept such files.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, ImageFile, ImageOps

from datastructure.errors import FileNotValid, ImageTooLarge, PyRecognizerError

ALLOWED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "BMP", "GIF", "TIFF"})

# Formats whose decoder can shrink by 1/2, 1/4 or 1/8 while decoding (Image.draft).
_DRAFTABLE_FORMATS = frozenset({"JPEG", "MPO"})
# EXIF orientations 5 to 8 turn the photo a quarter, which swaps width and height.
_QUARTER_TURN_ORIENTATIONS = frozenset({5, 6, 7, 8})
# Gray modes holding more than 8 bits a sample: Pillow's convert() clips them at 255.
_DEEP_GRAY_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_WHITE = (255, 255, 255)


@dataclass(frozen=True)
class DecodedImage:
    """A decoded photo, with what it takes to map its pixels back onto the stored photo."""

    array: np.ndarray
    """HxWx3 uint8 RGB, C-contiguous and writable."""
    scale: float
    """Original-pixel coordinates = array coordinates * scale (above 1 after a JPEG draft)."""
    original_size: tuple[int, int]
    """(width, height) of the photo as stored, after EXIF orientation."""
    format: str
    """Pillow's format name, e.g. "JPEG"."""


def configure_pillow(max_pixels: int) -> None:
    """Install Pillow's process-wide guards; call at start-up, after importing face_recognition."""
    # face_recognition turns truncated-image loading on when imported; a cut upload must fail.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    Image.MAX_IMAGE_PIXELS = max_pixels


def decode_image(
    data: bytes, *, max_side: int | None = None, max_pixels: int = 40_000_000
) -> DecodedImage:
    """Decode ``data`` into 8-bit RGB, turned the way its EXIF orientation says.

    With ``max_side``, a JPEG longer than that is decoded at 1/2, 1/4 or 1/8 scale, never
    below ``max_side`` on its longest side; another format at least twice that long is
    reduced by a whole factor after decoding, with the same floor, so that a 6000 px PNG
    does not cost the worker its full-size copies (issue 13).
    Raises FileNotValid for anything but a complete image in one of ALLOWED_FORMATS, and
    ImageTooLarge for an image of more than ``max_pixels`` pixels.
    """
    if max_side is not None and max_side < 1:
        raise ValueError(f"max_side must be at least 1, not {max_side}")
    stream = _EndWatchingStream(data)
    with _typed_pillow_errors(), Image.open(stream) as img:
        _check_format(img)
        _check_pixel_count(img.size, max_pixels)
        stored_size = img.size
        scale = _draft_scale(img, max_side)
        _load_all_pixels(img, stream)
        orientation = img.getexif().get(ExifTags.Base.Orientation)
        reduced, factor = _reduced(img, max_side) if scale == 1.0 else (img, 1)
        array = _rgb_array(ImageOps.exif_transpose(reduced) if orientation else reduced)
        return DecodedImage(array, scale * factor, oriented_size(stored_size, orientation), img.format)


def encode_jpeg(array: np.ndarray, quality: int = 90) -> bytes:
    """JPEG bytes of an HxWx3 uint8 RGB array, e.g. an annotated copy of an upload."""
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 array, got {array.dtype} {array.shape}")
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


class _EndWatchingStream(io.BytesIO):
    """In-memory bytes that remember whether a reader asked for more once they ran out.

    Pillow refuses truncated files only while the process-wide flag
    ImageFile.LOAD_TRUNCATED_IMAGES is False, and face_recognition sets it to True when
    imported. Flipping it around each decode would race with other threads, so the decode
    watches its own input instead: a complete image decodes without reading past the end
    of its data, while on a truncated one the decoder keeps asking for more (and, with the
    flag on, Pillow pads a JPEG with a made-up end marker or stops a PNG early).
    """

    ran_dry = False

    def read(self, size: int | None = -1, /) -> bytes:
        chunk = super().read(size)
        if size != 0 and not chunk:
            self.ran_dry = True
        return chunk


@contextlib.contextmanager
def _typed_pillow_errors() -> Iterator[None]:
    """Turn whatever Pillow raises on hostile bytes into FileNotValid or ImageTooLarge."""
    # catch_warnings swaps the process-wide filter list, so concurrent decodes may race on
    # it; the pixel count check in decode_image is the guard that does not depend on it.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            yield
        except PyRecognizerError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageTooLarge(str(exc)) from exc
        except Image.UnidentifiedImageError as exc:
            raise FileNotValid(
                f"not an image in a known format; allowed: {_allowed_formats_text()}"
            ) from exc
        except Exception as exc:
            # Pillow's parsers raise a wide, undocumented range of exceptions on malformed
            # input (OSError, SyntaxError, ValueError, struct.error, IndexError...); each of
            # them means the same thing here: these bytes are not a usable image.
            raise FileNotValid(f"not a readable image: {exc}") from exc


def _allowed_formats_text() -> str:
    return ", ".join(sorted(ALLOWED_FORMATS))


def _check_format(img: Image.Image) -> None:
    if img.format not in ALLOWED_FORMATS:
        raise FileNotValid(
            f"{img.format} images are not accepted; allowed: {_allowed_formats_text()}"
        )


def _check_pixel_count(size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"the image is {width}x{height}, {width * height:,} pixels; "
            f"the limit is {max_pixels:,}"
        )


def _draft_scale(img: Image.Image, max_side: int | None) -> float:
    """Ask libjpeg to decode a large JPEG at reduced scale; returns original / decoded size."""
    longest = max(img.size)
    if max_side is None or img.format not in _DRAFTABLE_FORMATS or longest <= max_side:
        return 1.0
    # draft() picks the largest of 8, 4, 2 that is <= min(width // w, height // h) for the
    # requested (w, h); asking for the aspect-preserving size of longest side max_side
    # therefore keeps the decoded longest side at or above max_side.
    requested = tuple(max(1, side * max_side // longest) for side in img.size)
    original_width = img.size[0]
    drafted = img.draft("RGB", requested)
    if drafted is None:
        return 1.0
    _, box = drafted
    return original_width / box[2]


def _reduced(img: Image.Image, max_side: int | None) -> tuple[Image.Image, int]:
    """Return ``img`` shrunk by the largest whole factor that keeps its longest side at or
    above ``max_side`` (box filter), and that factor; ``img`` itself when it cannot shrink."""
    factor = max(img.size) // max_side if max_side else 1
    if factor < 2:
        return img, 1
    try:
        reduced = img.reduce(factor)
    except ValueError:  # modes reduce() does not handle (palette, 16-bit): keep the pixels as they are
        return img, 1
    reduced.info = img.info  # transparency, EXIF: what _rgb_array and exif_transpose read
    return reduced, factor


def _load_all_pixels(img: Image.Image, stream: _EndWatchingStream) -> None:
    stream.ran_dry = False
    img.load()
    if stream.ran_dry:
        raise FileNotValid("the image is truncated: the file ends before its pixels do")


def oriented_size(size: tuple[int, int], orientation: int | None) -> tuple[int, int]:
    """(width, height) of a photo stored as ``size`` once its EXIF ``orientation`` is applied."""
    width, height = size
    return (height, width) if orientation in _QUARTER_TURN_ORIENTATIONS else (width, height)


def _rgb_array(img: Image.Image) -> np.ndarray:
    """``img`` as a writable HxWx3 uint8 array."""
    if img.mode in _DEEP_GRAY_MODES:
        return np.repeat(_gray_8_bit(img)[:, :, np.newaxis], 3, axis=2)
    return np.array(_flattened_rgb(img), dtype=np.uint8)


def _gray_8_bit(img: Image.Image) -> np.ndarray:
    """The high byte of each 16-bit sample, the way Pillow itself reads 16-bit RGB."""
    # Mode "I" is 32-bit, but from image files it carries 16-bit samples.
    samples = np.clip(np.asarray(img), 0, 0xFFFF).astype(np.uint16)
    return (samples >> 8).astype(np.uint8)


def _flattened_rgb(img: Image.Image) -> Image.Image:
    """``img`` in RGB mode, transparent parts laid onto white like a page."""
    if not img.has_transparency_data:
        return img.convert("RGB")
    rgba = img.convert("RGBA")
    page = Image.new("RGB", rgba.size, _WHITE)
    page.paste(rgba, mask=rgba.getchannel("A"))
    return page
