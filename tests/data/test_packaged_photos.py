"""The catalogue of photos shipped in packages: crops cut from their whole photo, names checked."""

from __future__ import annotations

import numpy as np
import pytest

from PIL import Image

from ingredients.data.packaged_photos import CROPS, PHOTO_NAMES, PORTRAITS, load_photo, load_photos, photo_path


@pytest.mark.parametrize("name", sorted(CROPS))
def test_a_crop_is_its_box_of_the_whole_photo(name):
    source, (x0, y0, x1, y1) = CROPS[name]
    crop = load_photo(name)
    assert crop.dtype == np.uint8 and crop.shape == (y1 - y0, x1 - x0, 3) and crop.flags.c_contiguous
    np.testing.assert_array_equal(crop, load_photo(source)[y0:y1, x0:x1])


def test_portraits_are_catalogued_and_unknown_names_list_the_known_ones():
    assert set(PORTRAITS) <= set(PHOTO_NAMES)
    assert all(p.ndim == 3 and p.shape[2] == 3 for p in load_photos().values())
    with pytest.raises(KeyError, match="unknown packaged photo 'tom'; available: hanks, grace"):
        load_photo("tom")


def test_a_whole_photo_is_its_shipped_file_and_a_crop_has_none():
    path = photo_path("grace")
    assert path.name == "grace_hopper.jpg" and path.is_file()
    with Image.open(path) as image:
        np.testing.assert_array_equal(load_photo("grace"), np.asarray(image.convert("RGB")))
    with pytest.raises(KeyError, match="a crop, not a file 'astronaut'; files: hanks, grace, astronaut_full, t1"):
        photo_path("astronaut")
