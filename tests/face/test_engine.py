"""The dlib engine and the image decoder, on real fixture photos (real dlib, no fakes)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emulator.face.decode import (
    UNKNOWN_IMAGE_TYPE,
    ImageError,
    ImageTooLarge,
    ImageTooSmall,
    UnknownImageType,
    decode_image,
)
from emulator.face.engine import DlibEngine, Face, FaceEngine, face_quality, score_to_confidence

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
LIMITS = {"max_width": 3840, "max_height": 2160}


def read(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


@pytest.fixture(params=["hog", "yunet"])
def engine(request: pytest.FixtureRequest) -> DlibEngine:
    """The real engine with each face detector (``hog_engine``, ``yunet_engine`` from tests/conftest.py: models
    loaded once per run); the yunet runs skip where its wheel is absent (fail in CI)."""
    found: DlibEngine = request.getfixturevalue(f"{request.param}_engine")
    return found


# -- decoding ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "people/obama/obama-480p.jpg",
        "derived/obama_palette.png",
        "derived/obama_gray.jpg",
        "derived/obama_cmyk.jpg",
        "derived/obama_rotated_exif.jpg",
    ],
)
def test_decode_formats_match_the_plain_jpeg(name: str) -> None:
    plain = decode_image(read("people/obama/obama-480p.jpg"), **LIMITS).astype(np.float64)
    rgb = decode_image(read(name), **LIMITS)
    assert rgb.dtype == np.uint8
    assert rgb.shape == (480, 853, 3)
    assert rgb.flags["C_CONTIGUOUS"]
    assert rgb.flags["WRITEABLE"]
    gray_plain = plain.mean(axis=2)
    assert np.abs(rgb.astype(np.float64).mean(axis=2) - gray_plain).mean() < 6.0


def test_decode_gray_is_three_equal_channels() -> None:
    rgb = decode_image(read("derived/obama_gray.jpg"), **LIMITS)
    assert np.array_equal(rgb[..., 0], rgb[..., 1])
    assert np.array_equal(rgb[..., 1], rgb[..., 2])


def test_decode_tiff() -> None:
    rgb = decode_image(read("derived/obama.tiff"), **LIMITS)
    assert rgb.shape == (360, 640, 3)


def test_decode_rgba_composites_transparency_on_white() -> None:
    rgb = decode_image(read("derived/biden_rgba.png"), **LIMITS)
    assert rgb.shape == (480, 480, 3)
    assert tuple(rgb[0, 0]) == (255, 255, 255)
    assert tuple(rgb[-1, -1]) == (255, 255, 255)
    assert rgb[240, 240].tolist() != [255, 255, 255]


def test_decode_16_bit_gray_is_scaled_not_clipped() -> None:
    values = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (16, 1))
    data = encode(Image.fromarray(values), "PNG")
    rgb = decode_image(data, **LIMITS)
    assert rgb[0, 0, 0] == 0
    assert rgb[0, -1, 0] == 255
    assert 120 <= rgb[0, 32, 0] <= 135


def test_decode_bilevel_and_la_modes() -> None:
    bilevel = Image.new("1", (20, 10), 1)
    assert decode_image(encode(bilevel, "PNG"), **LIMITS)[0, 0].tolist() == [255, 255, 255]
    la = Image.new("LA", (20, 10), (0, 0))  # black, fully transparent -> white
    assert decode_image(encode(la, "PNG"), **LIMITS)[0, 0].tolist() == [255, 255, 255]


def test_decode_min_side_5x5_is_accepted() -> None:
    data = encode(Image.new("RGB", (5, 5), (10, 20, 30)), "PNG")
    assert decode_image(data, **LIMITS).shape == (5, 5, 3)


@pytest.mark.parametrize("size", [(4, 4), (4, 100), (100, 4)])
def test_decode_too_small(size: tuple[int, int]) -> None:
    data = encode(Image.new("RGB", size), "PNG")
    with pytest.raises(ImageTooSmall) as err:
        decode_image(data, **LIMITS)
    assert f"{size[0]}x{size[1]}" in err.value.message
    assert "5x5" in err.value.message


@pytest.mark.parametrize("size", [(3841, 10), (10, 3841), (2161, 2161), (4000, 2000)])
def test_decode_too_large(size: tuple[int, int]) -> None:
    data = encode(Image.new("L", size), "PNG")
    with pytest.raises(ImageTooLarge) as err:
        decode_image(data, **LIMITS)
    assert f"{size[0]}x{size[1]}" in err.value.message
    assert "3840x2160" in err.value.message


def test_decode_portrait_4k_is_accepted() -> None:
    # The limit is a resolution: a portrait photo may be 2160 wide and 3840 tall.
    assert decode_image(encode(Image.new("L", (2160, 3840)), "PNG"), **LIMITS).shape == (3840, 2160, 3)


def test_decode_size_uses_upright_dimensions() -> None:
    # Stored 2160 wide x 3840 high, tagged Orientation 6: the decoded array is upright, 3840 wide x 2160 high.
    exif = Image.Exif()
    exif[0x0112] = 6
    tall = encode(Image.new("L", (2160, 3840)), "JPEG", exif=exif.tobytes(), quality=30)
    assert decode_image(tall, **LIMITS).shape == (2160, 3840, 3)
    with pytest.raises(ImageTooLarge, match="larger than the allowed 3000x2160"):
        decode_image(tall, max_width=3000, max_height=2160)


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [4000, 40000])
def test_decompression_bomb_is_refused_from_the_header(side: int) -> None:
    with pytest.raises(ImageTooLarge) as err:
        decode_image(_png_header_only(side, side), **LIMITS)
    assert f"{side}x{side}" in err.value.message


def test_bomb_beyond_pillows_own_limit_with_larger_settings() -> None:
    # 40000x40000 exceeds Pillow's DecompressionBombError limit before our own check can run.
    with pytest.raises(ImageTooLarge, match="40000x40000"):
        decode_image(_png_header_only(40000, 40000), max_width=50000, max_height=50000)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello, world",
        b"\x89PNG\r\n\x1a\n",
        bytes(range(256)) * 10,
    ],
)
def test_unknown_bytes(data: bytes) -> None:
    with pytest.raises(UnknownImageType) as err:
        decode_image(data, **LIMITS)
    assert err.value.message == UNKNOWN_IMAGE_TYPE


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "WEBP", "PPM"])
def test_other_formats_are_unknown(fmt: str) -> None:
    data = encode(Image.new("RGB", (50, 50), (200, 10, 10)), fmt)
    with pytest.raises(UnknownImageType):
        decode_image(data, **LIMITS)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
@pytest.mark.parametrize(
    "name", ["people/obama/obama-480p.jpg", "people/alex_lacamoire/alex-lacamoire.png", "derived/obama.tiff"]
)
def test_truncated_files_are_unknown(name: str) -> None:
    data = read(name)
    with pytest.raises(UnknownImageType):
        decode_image(data[: len(data) // 2], **LIMITS)


def test_image_errors_share_a_base_with_a_message() -> None:
    for cls in (UnknownImageType, ImageTooSmall, ImageTooLarge):
        assert issubclass(cls, ImageError)
    assert UnknownImageType().message == UNKNOWN_IMAGE_TYPE


# -- the engine ----------------------------------------------------------------------------------------------


def _check_face(face: Face, width: int, height: int) -> None:
    left, top, right, bottom = face.box
    assert 0 <= left < right <= width
    assert 0 <= top < bottom <= height
    assert 0.0 <= face.confidence <= 1.0
    assert 0.0 <= face.awesomeness <= 1.0
    assert face.embedding.dtype == np.float32
    assert face.embedding.shape == (128,)
    assert abs(float(np.linalg.norm(face.embedding)) - 1.0) < 1e-5
    assert len(face.landmarks) == 5


def test_engine_satisfies_the_protocol(engine: DlibEngine) -> None:
    protocol_user: FaceEngine = engine
    assert callable(protocol_user.analyze)


def test_warm_up_is_idempotent(engine: DlibEngine) -> None:
    engine.warm_up()
    engine.warm_up()


def test_one_face(engine: DlibEngine) -> None:
    faces = engine.analyze(read("people/obama/obama-480p.jpg"))
    assert len(faces) == 1
    _check_face(faces[0], 853, 480)
    # HOG: sigmoid(4 * score) of a clear face; YuNet: its score / 100 (clear faces score 0.88-0.95 on the fixtures)
    assert faces[0].confidence > (0.99 if engine.detector_in_use == "hog" else 0.85)


def test_exif_rotated_twin_gives_upright_box_and_same_embedding(engine: DlibEngine) -> None:
    (plain,) = engine.analyze(read("people/obama/obama-480p.jpg"))
    (rotated,) = engine.analyze(read("derived/obama_rotated_exif.jpg"))
    _check_face(rotated, 853, 480)
    assert all(abs(a - b) <= 4 for a, b in zip(plain.box, rotated.box, strict=True))
    assert float(plain.embedding @ rotated.embedding) > 0.99


@pytest.mark.parametrize(
    "name",
    [
        "derived/biden_rgba.png",
        "derived/obama_palette.png",
        "derived/obama.tiff",
        "derived/obama_gray.jpg",
        "derived/obama_cmyk.jpg",
        "people/alex_lacamoire/alex-lacamoire.png",
    ],
)
def test_every_format_gives_one_face(engine: DlibEngine, name: str) -> None:
    assert len(engine.analyze(read(name))) == 1


@pytest.mark.parametrize(
    "name", ["no-face/chelsea.png", "no-face/rocket.jpg", "no-face/pilatus800.jpg", "no-face/no-faces.jpg"]
)
def test_no_face(engine: DlibEngine, name: str) -> None:
    assert engine.analyze(read(name)) == []


def test_5x5_image_has_no_face(engine: DlibEngine) -> None:
    assert engine.analyze(encode(Image.new("RGB", (5, 5)), "PNG")) == []


@pytest.mark.parametrize(
    ("name", "count"),
    [
        ("groups/kit_with_rose.jpg", 2),
        ("groups/two_people.jpg", 2),
        ("groups/multiface.jpg", 6),
        ("groups/obama_and_biden.jpg", 3),
    ],
)
def test_group_photos_sorted_left_to_right(engine: DlibEngine, name: str, count: int) -> None:
    with Image.open(FIXTURES / name) as img:
        width, height = img.size
    faces = engine.analyze(read(name))
    assert len(faces) == count
    for face in faces:
        _check_face(face, width, height)
    keys = [(f.box[0], f.box[1]) for f in faces]
    assert keys == sorted(keys)


def test_same_person_closer_than_different_people(engine: DlibEngine) -> None:
    obama, biden = engine.analyze(read("groups/two_people.jpg"))
    (obama2,) = engine.analyze(read("people/obama/obama2.jpg"))
    (biden2,) = engine.analyze(read("people/biden/biden2.jpg"))
    assert float(obama.embedding @ obama2.embedding) > 0.93
    assert float(biden.embedding @ biden2.embedding) > 0.93
    assert float(obama2.embedding @ biden2.embedding) < 0.93


def test_engine_raises_image_errors(engine: DlibEngine) -> None:
    with pytest.raises(UnknownImageType):
        engine.analyze(b"not an image")
    with pytest.raises(ImageTooLarge):
        engine.analyze(_png_header_only(40000, 40000))


def test_results_are_deterministic(engine: DlibEngine) -> None:
    first = engine.analyze(read("people/obama/obama_small.jpg"))
    second = engine.analyze(read("people/obama/obama_small.jpg"))
    assert [f.box for f in first] == [f.box for f in second]
    assert [f.awesomeness for f in first] == [f.awesomeness for f in second]
    assert np.array_equal(first[0].embedding, second[0].embedding)


def test_confidence_mapping_is_monotonic() -> None:
    scores = [-3.0, -0.5, 0.0, 0.1, 0.5, 1.0, 2.0, 3.0, 50.0]
    values = [score_to_confidence(s) for s in scores]
    assert values == sorted(values)
    assert all(0.0 <= v <= 1.0 for v in values)
    assert score_to_confidence(0.0) == 0.5


def test_face_quality_prefers_sharp_to_blurred() -> None:
    rng = np.random.default_rng(0)
    sharp = rng.integers(0, 256, size=(150, 150, 3), dtype=np.uint8)
    flat = np.full((150, 150, 3), 128, dtype=np.uint8)
    assert 0.0 <= face_quality(flat, box_side=40) < face_quality(sharp, box_side=300) <= 1.0
