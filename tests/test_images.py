"""utils.images: every format and colour mode to 8-bit RGB, orientation, draft, hostile bytes."""

import io
import pickle

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from datastructure.errors import FileNotValid, ImageTooLarge, PyRecognizerError
from utils.images import ALLOWED_FORMATS, configure_pillow, decode_image, encode_jpeg
from tests.hostile import encoded, gradient, mutated, png, time_limit

ORIENTATION = 0x0112
RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def assert_rgb(array: np.ndarray, height: int, width: int) -> None:
    assert array.shape == (height, width, 3)
    assert array.dtype == np.uint8
    assert array.flags.c_contiguous and array.flags.writeable


# --- formats ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fmt, options",
    [
        ("JPEG", {}),
        ("JPEG", {"progressive": True}),
        ("PNG", {}),
        ("WEBP", {"lossless": True}),
        ("BMP", {}),
        ("GIF", {}),
        ("TIFF", {}),
        ("TIFF", {"compression": "tiff_deflate"}),
    ],
)
def test_each_allowed_format_decodes_to_rgb(fmt, options):
    decoded = decode_image(encoded(gradient(), fmt, **options))
    assert decoded.format == fmt
    assert_rgb(decoded.array, 48, 64)
    assert decoded.scale == 1.0
    assert decoded.original_size == (64, 48)


def test_lossless_formats_keep_every_pixel():
    picture = gradient()
    for fmt in ("PNG", "BMP", "TIFF"):
        np.testing.assert_array_equal(decode_image(encoded(picture, fmt)).array, picture)


def test_mpo_is_read_as_its_first_picture():
    data = encoded(Image.new("RGB", (20, 10), RED), "MPO", save_all=True,
                   append_images=[Image.new("RGB", (20, 10), BLUE)])
    decoded = decode_image(data)
    assert decoded.format == "MPO"
    assert tuple(decoded.array[5, 10]) == pytest.approx(RED, abs=8)


def test_gif_is_read_as_its_first_frame():
    data = encoded(Image.new("RGB", (20, 10), RED), "GIF", save_all=True,
                   append_images=[Image.new("RGB", (20, 10), BLUE)])
    assert Image.open(io.BytesIO(data)).n_frames == 2
    assert tuple(decode_image(data).array[5, 10]) == RED


@pytest.mark.parametrize("fmt", ["PPM", "TGA", "ICO", "PCX"])
def test_other_formats_are_refused_by_name(fmt):
    with pytest.raises(FileNotValid, match=fmt) as raised:
        decode_image(encoded(gradient(32, 32), fmt))
    assert "allowed: BMP, GIF, JPEG" in raised.value.description


# --- colour modes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "mode, fmt",
    [("L", "PNG"), ("L", "JPEG"), ("1", "PNG"), ("1", "BMP"), ("P", "PNG"), ("P", "GIF"),
     ("CMYK", "JPEG"), ("CMYK", "TIFF"), ("RGBA", "PNG"), ("LA", "PNG")],
)
def test_every_colour_mode_becomes_8_bit_rgb(mode, fmt):
    data = encoded(gradient().convert(mode), fmt)
    assert Image.open(io.BytesIO(data)).mode == mode
    assert_rgb(decode_image(data).array, 48, 64)


def test_gray_gives_three_equal_channels():
    array = decode_image(encoded(gradient().convert("L"), "PNG")).array
    assert (array[..., 0] == array[..., 1]).all() and (array[..., 1] == array[..., 2]).all()


def test_one_bit_gives_black_and_white():
    picture = Image.new("1", (8, 8), 0)
    picture.putpixel((3, 3), 1)
    array = decode_image(encoded(picture, "PNG")).array
    assert tuple(array[3, 3]) == WHITE and tuple(array[0, 0]) == (0, 0, 0)


def test_cmyk_jpeg_gives_its_rgb_colour():
    array = decode_image(encoded(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG")).array
    assert tuple(array[4, 4]) == pytest.approx(RED, abs=8)


@pytest.mark.parametrize(
    "mode, colour, fmt",
    [("RGBA", (200, 0, 0, 0), "PNG"), ("RGBA", (200, 0, 0, 0), "WEBP"), ("LA", (0, 0), "PNG")],
)
def test_transparent_pixels_become_white(mode, colour, fmt):
    data = encoded(Image.new(mode, (4, 4), colour), fmt, lossless=True)
    assert Image.open(io.BytesIO(data)).mode == mode
    assert (decode_image(data).array == 255).all()


def test_half_transparent_black_becomes_mid_gray():
    array = decode_image(encoded(Image.new("RGBA", (4, 4), (0, 0, 0, 128)), "PNG")).array
    assert tuple(array[0, 0]) == (127, 127, 127)


def test_palette_transparency_becomes_white():
    picture = Image.new("P", (4, 4), 1)
    picture.putpalette([*BLUE, *RED])
    picture.putpixel((0, 0), 0)
    array = decode_image(encoded(picture, "PNG", transparency=0)).array
    assert tuple(array[0, 0]) == WHITE and tuple(array[1, 1]) == RED


SIXTEEN_BIT_SAMPLES = np.array([[0, 257, 40000, 65535]], dtype=np.uint16)
EIGHT_BIT_SAMPLES = [0, 1, 156, 255]  # the high byte: 257 * k -> k, 65535 -> 255


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_gray_is_scaled_not_clipped(fmt):
    data = encoded(Image.fromarray(SIXTEEN_BIT_SAMPLES), fmt)
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    array = decode_image(data).array
    assert array[0, :, 0].tolist() == EIGHT_BIT_SAMPLES
    assert (array[..., 0] == array[..., 2]).all()


def test_32_bit_gray_holding_16_bit_samples_is_scaled():
    data = encoded(Image.fromarray(SIXTEEN_BIT_SAMPLES.astype(np.int32)), "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "I"
    assert decode_image(data).array[0, :, 1].tolist() == EIGHT_BIT_SAMPLES


def test_16_bit_rgb_png_is_scaled():
    # Pillow cannot write 48-bit PNG, so write one by hand: a filter byte, then R, G, B.
    row = b"\0" + SIXTEEN_BIT_SAMPLES.astype(">u2").repeat(3).tobytes()
    data = png(4, 1, bit_depth=16, colour_type=2, rows=row)
    assert decode_image(data).array[0, :, 2].tolist() == EIGHT_BIT_SAMPLES


# --- orientation and draft -------------------------------------------------------------


def with_left_column(img: Image.Image, colour: tuple[int, int, int]) -> Image.Image:
    img = img.copy()
    img.paste(colour, (0, 0, max(1, img.width // 10), img.height))
    return img


def oriented_jpeg(img: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    return encoded(img, "JPEG", exif=exif, quality=95)


def test_exif_orientation_turns_the_photo():
    # Orientation 6: the camera was turned clockwise, so the stored left edge is the top.
    data = oriented_jpeg(with_left_column(Image.new("RGB", (40, 20), WHITE), RED), 6)
    decoded = decode_image(data)
    assert_rgb(decoded.array, 40, 20)
    assert decoded.original_size == (20, 40)
    assert tuple(decoded.array[0, 10]) == pytest.approx(RED, abs=10)
    assert tuple(decoded.array[-1, 10]) == pytest.approx(WHITE, abs=10)


@pytest.fixture(scope="module")
def large_jpeg() -> bytes:
    return encoded(gradient(4000, 3000), "JPEG", quality=80)


def test_draft_decodes_a_large_jpeg_at_reduced_scale(large_jpeg):
    decoded = decode_image(large_jpeg, max_side=1000)
    height, width, _ = decoded.array.shape
    assert 1000 <= max(width, height) < 2000
    assert decoded.scale == pytest.approx(4000 / width)
    assert decoded.original_size == (4000, 3000)


def test_draft_scale_and_size_survive_orientation():
    data = oriented_jpeg(gradient(4000, 3000), 6)
    decoded = decode_image(data, max_side=1000)
    assert_rgb(decoded.array, 1000, 750)
    assert decoded.scale == 4.0
    assert decoded.original_size == (3000, 4000)


@pytest.mark.parametrize("max_side", [1, 50, 99, 100, 101, 199, 200, 399, 400, 1000])
def test_draft_never_goes_below_max_side_nor_stops_early(max_side):
    decoded = decode_image(encoded(gradient(400, 300), "JPEG"), max_side=max_side)
    longest = max(decoded.array.shape[:2])
    assert longest >= min(max_side, 400)
    could_halve_again = decoded.scale < 8 and longest // 2 >= max_side
    assert not could_halve_again
    assert decoded.scale == 400 / decoded.array.shape[1]


def test_draft_scale_is_exact_when_sides_do_not_divide():
    decoded = decode_image(encoded(gradient(4001, 3001), "JPEG"), max_side=1000)
    assert decoded.array.shape == (751, 1001, 3)
    assert decoded.scale == 4.0  # libjpeg scales by exactly 1/4; the last block is partial
    assert decoded.original_size == (4001, 3001)


def test_other_formats_shrink_by_a_whole_factor_never_below_max_side():
    decoded = decode_image(encoded(gradient(400, 300), "PNG"), max_side=100)
    assert decoded.scale == 4.0 and decoded.array.shape == (75, 100, 3) and decoded.original_size == (400, 300)
    decoded = decode_image(encoded(gradient(400, 300), "PNG"), max_side=201)
    assert decoded.scale == 1.0 and decoded.array.shape == (300, 400, 3)


def test_max_side_must_be_positive():
    with pytest.raises(ValueError):
        decode_image(encoded(gradient(), "JPEG"), max_side=0)


# --- decompression bombs ---------------------------------------------------------------


def test_huge_one_bit_png_is_too_large():
    data = encoded(Image.new("1", (10_000, 10_000)), "PNG")
    assert len(data) < 100_000
    with pytest.raises(ImageTooLarge):
        decode_image(data)


def test_pixel_count_is_checked_before_any_pixel_is_decoded():
    # No IDAT at all: decoding would fail as FileNotValid, so ImageTooLarge proves the order.
    data = png(3000, 3000, bit_depth=8, colour_type=2)
    with pytest.raises(ImageTooLarge, match="3000x3000"):
        decode_image(data, max_pixels=1_000_000)


def test_max_pixels_is_inclusive():
    assert decode_image(encoded(gradient(100, 100), "PNG"), max_pixels=10_000)
    with pytest.raises(ImageTooLarge):
        decode_image(encoded(gradient(101, 100), "PNG"), max_pixels=10_000)


@pytest.mark.parametrize("size", [(40, 40), (100, 100)], ids=["warning", "error"])
def test_pillow_bomb_guard_is_reported_as_too_large(monkeypatch, size):
    # Over MAX_IMAGE_PIXELS Pillow warns, over twice that it raises; both must surface typed.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageTooLarge):
        decode_image(encoded(gradient(*size), "PNG"), max_pixels=10**9)


# --- truncation ------------------------------------------------------------------------


@pytest.fixture(params=[False, True], ids=["strict", "face_recognition"])
def load_truncated_images(request, monkeypatch):
    """Both settings of the flag face_recognition turns on when it is imported."""
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", request.param)


@pytest.mark.parametrize(
    "fmt, options",
    [("JPEG", {}), ("JPEG", {"progressive": True}), ("PNG", {}), ("GIF", {}),
     ("BMP", {}), ("TIFF", {}), ("WEBP", {})],
)
@pytest.mark.usefixtures("load_truncated_images")
def test_truncated_files_are_refused(fmt, options):
    data = encoded(gradient(200, 150), fmt, **options)
    assert decode_image(data)
    with pytest.raises(FileNotValid):
        decode_image(data[: len(data) // 2])


@pytest.mark.usefixtures("load_truncated_images")
def test_jpeg_cut_anywhere_is_refused():
    data = encoded(gradient(120, 90), "JPEG")
    for cut in range(2, len(data) - 2, 97):
        with pytest.raises(FileNotValid):
            decode_image(data[:cut])


def test_configure_pillow_undoes_face_recognition(monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    configure_pillow(1234)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    assert Image.MAX_IMAGE_PIXELS == 1234


# --- hostile and non-image bytes -------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        bytes(range(256)) * 4,
        b"<!DOCTYPE html><html><body><img src=x onerror=alert(1)></body></html>",
        b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><rect/></svg>',
        b"<?php system($_GET['c']); ?>",
        b"GIF89a<?php system($_GET['c']); ?>",
        b"\xff\xd8\xff\xe0" + b"\0" * 20,
        pickle.dumps({"encoding": [0.1] * 128}),
    ],
    ids=["empty", "random", "html", "svg", "php", "gif-php-polyglot", "jpeg-header", "pickle"],
)
def test_non_images_are_refused(data):
    with pytest.raises(FileNotValid):
        decode_image(data)


# --- real photos -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, size, fmt", [("obama.jpg", (910, 1137), "JPEG"), ("32bit.png", (626, 1200), "PNG")]
)
def test_real_photos_decode_at_their_size(faces, name, size, fmt):
    data = (faces / "samples" / name).read_bytes()
    decoded = decode_image(data)
    assert decoded.format == fmt and decoded.original_size == size and decoded.scale == 1.0
    assert_rgb(decoded.array, size[1], size[0])


def test_real_photo_draft(faces):
    decoded = decode_image((faces / "samples" / "biden.jpg").read_bytes(), max_side=500)
    assert decoded.original_size == (970, 2204)
    assert decoded.scale == 4.0 and max(decoded.array.shape) >= 500


# --- encode_jpeg -----------------------------------------------------------------------


def test_encode_jpeg_round_trips():
    original = np.asarray(gradient())
    decoded = decode_image(encode_jpeg(original, quality=95))
    assert decoded.format == "JPEG"
    assert np.abs(decoded.array.astype(int) - original).mean() < 3


@pytest.mark.parametrize(
    "array", [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 3))]
)
def test_encode_jpeg_wants_rgb_bytes(array):
    with pytest.raises(ValueError):
        encode_jpeg(array)


# --- fuzz: hostile bytes only ever raise the typed errors, and never hang ---------------

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Pillow warns about the corrupt metadata it skips; here that is the point.
EXPECTED_WARNINGS = pytest.mark.filterwarnings("ignore::UserWarning")
SEEDS = [
    encoded(gradient(24, 16), fmt, **options)
    for fmt, options in [("JPEG", {}), ("JPEG", {"progressive": True}), ("PNG", {}),
                         ("GIF", {}), ("WEBP", {}), ("TIFF", {}), ("BMP", {})]
]
assert {Image.open(io.BytesIO(seed)).format for seed in SEEDS} <= ALLOWED_FORMATS


def decodes_or_raises_typed(data: bytes) -> None:
    with time_limit(5):
        try:
            decode_image(data, max_side=8, max_pixels=1_000_000)
        except PyRecognizerError:
            pass


@EXPECTED_WARNINGS
@FUZZ
@given(data=st.binary(max_size=4096))
def test_fuzz_random_bytes(data):
    decodes_or_raises_typed(data)


@EXPECTED_WARNINGS
@FUZZ
@given(data=mutated(SEEDS))
def test_fuzz_mutated_images(data):
    decodes_or_raises_typed(data)


@pytest.mark.parametrize("size", [(1, 1), (2, 100), (100, 1), (3, 3)])
def test_photos_too_small_for_a_face_find_none_even_with_the_cnn_fallback(size):
    """dlib's CNN detector raises on images a few pixels wide: the pipeline must answer "no face"."""
    from utils.faces import Options, decoded, faces_in

    options = Options(cnn_fallback=True)
    data = encoded(Image.new("RGB", size, (128, 128, 128)), "PNG")
    assert faces_in(decoded(data, options), options) == []
