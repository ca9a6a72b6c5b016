"""Photo modes are converted to RGB uint8 properly; unreadable files name themselves."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ingredients.faces.errors import ImageReadError
from ingredients.faces.image_io import check_rgb_array, load_rgb, pil_to_rgb


def test_rgba_is_composited_on_white(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[0, 0, 3] = 255  # opaque red-ish
    rgba[0, 1, 3] = 128  # half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = load_rgb(tmp_path / "a.png")
    assert out.shape == (4, 4, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, 0], [200, 0, 0])
    np.testing.assert_array_equal(out[1, 1], [255, 255, 255])  # fully transparent -> white
    assert abs(int(out[0, 1, 0]) - 228) <= 1 and abs(int(out[0, 1, 1]) - 127) <= 1


def test_la_and_palette_transparency(tmp_path):
    la = Image.fromarray(np.stack([np.full((2, 2), 10, np.uint8), np.array([[255, 0], [255, 0]], np.uint8)], -1), "LA")
    out = pil_to_rgb(la)
    np.testing.assert_array_equal(out[:, 0], [[10, 10, 10]] * 2)
    np.testing.assert_array_equal(out[:, 1], [[255, 255, 255]] * 2)
    palette = Image.new("P", (2, 1))
    palette.putpalette([0, 0, 0, 30, 60, 90] + [0] * 762)
    palette.putdata([0, 1])
    palette.info["transparency"] = 0
    palette.save(tmp_path / "p.png", transparency=0)
    np.testing.assert_array_equal(load_rgb(tmp_path / "p.png")[0], [[255, 255, 255], [30, 60, 90]])


def test_grayscale_and_16_bit(tmp_path):
    gray = np.array([[0, 128, 255]], np.uint8)
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    np.testing.assert_array_equal(load_rgb(tmp_path / "g.png")[0], np.repeat(gray[0][:, None], 3, 1))
    deep = np.array([[0, 257 * 128, 65535, 1000]], np.uint16)
    Image.fromarray(deep).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    out = load_rgb(tmp_path / "g16.png")
    np.testing.assert_array_equal(out[0, :, 0], [0, 128, 255, 4])  # full 16-bit range, not clipped at 255
    assert (out[..., 0] == out[..., 2]).all()


def test_float_and_cmyk():
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32), "F")
    np.testing.assert_array_equal(pil_to_rgb(unit)[0, :, 1], [0, 128, 255])
    cmyk = Image.new("CMYK", (1, 1), (0, 255, 255, 0))
    np.testing.assert_array_equal(pil_to_rgb(cmyk)[0, 0], [255, 0, 0])


def test_exif_orientation_is_applied(tmp_path):
    image = Image.fromarray(np.zeros((10, 20, 3), np.uint8))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    image.save(tmp_path / "r.jpg", exif=exif)
    assert load_rgb(tmp_path / "r.jpg").shape == (20, 10, 3)


def test_unreadable_files_are_named(tmp_path):
    with pytest.raises(ImageReadError, match=r"cannot read image .*missing\.jpg: no such file"):
        load_rgb(tmp_path / "missing.jpg")
    (tmp_path / "noise.png").write_bytes(b"this is not an image at all")
    with pytest.raises(ImageReadError, match=r"noise\.png: not a recognised image format"):
        load_rgb(tmp_path / "noise.png")
    from skimage import data

    Image.fromarray(data.astronaut()).save(tmp_path / "full.jpg")
    data_bytes = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data_bytes[: len(data_bytes) // 2])
    with pytest.raises(ImageReadError, match=r"truncated\.jpg: corrupt or truncated image data"):
        load_rgb(tmp_path / "truncated.jpg")


def test_check_rgb_array_messages():
    with pytest.raises(TypeError, match="numpy array"):
        check_rgb_array([[0]])
    with pytest.raises(ValueError, match=r"got shape \(4, 4, 4\)"):
        check_rgb_array(np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="uint8, got float64"):
        check_rgb_array(np.zeros((4, 4, 3)))
    view = np.zeros((4, 8, 3), np.uint8)[:, ::-1]
    assert check_rgb_array(view).flags.c_contiguous
