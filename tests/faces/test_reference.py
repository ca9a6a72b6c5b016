"""Reference processing end to end: dlib + tiny CLIP on real photos, canvas layout, cache."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ingredients.config import ParamsError, validate_model
from ingredients.faces.errors import FaceQualityWarning
from ingredients.faces.reference import (
    FaceConditioner,
    FaceSettings,
    build_face_conditioner,
    canvas_layout,
    make_canvas,
    process_references,
)


@pytest.fixture(scope="module")
def conditioner(dlib_analyzer, tiny_clip, tmp_path_factory):
    settings = FaceSettings(crop_size=112, cache_dir=str(tmp_path_factory.mktemp("ref_cache")))
    return FaceConditioner(dlib_analyzer, tiny_clip, settings)


def clean_photos(photo_dir, k):
    """k real single-face photos of different people."""
    return [photo_dir / "grace_hopper.png"] + [photo_dir / f"person_{i}.png" for i in range(k - 1)]


def test_centred_layout_for_k_faces():
    c = "centred"
    assert canvas_layout(2, 720, 480, c) == [(0, 60, 360), (360, 60, 360)]
    assert canvas_layout(1, 720, 480, c) == [(180, 60, 360)]
    assert canvas_layout(3, 720, 480, c) == [(0, 120, 240), (240, 120, 240), (480, 120, 240)]
    assert canvas_layout(4, 720, 480, c) == [(0, 150, 180), (180, 150, 180), (360, 150, 180), (540, 150, 180)]
    assert canvas_layout(2, 64, 64, c) == [(0, 16, 32), (32, 16, 32)]
    assert canvas_layout(1, 64, 64, c) == [(8, 8, 48)]
    with pytest.raises(ValueError, match="at least one face"):
        canvas_layout(0, 720, 480)
    with pytest.raises(ValueError, match="canvas layout must be one of"):
        canvas_layout(1, 720, 480, "middle")


def authors_canvas(crops: np.ndarray) -> np.ndarray:
    """feizc/Ingredients models/utils.py, process_face_embeddings_infer, transcribed line by line
    (the face crops given; their cropped_faces[0] is facexlib's 512 px RGB crop)."""
    new_img = Image.new("RGB", (720, 480), color=(255, 255, 255))  # line 278
    i = 0  # line 280
    for crop in crops:  # line 281
        img = Image.fromarray(crop, "RGB")  # line 339
        img = img.resize((360, 360))  # line 340
        new_img.paste(img, (360 * i, 60))  # line 341
        i += 1  # line 342
    return np.array(new_img)  # line 344


@pytest.mark.parametrize("k", [1, 2, 3])
def test_default_canvas_is_the_authors_for_every_k(k):
    """The default layout: identity i at (360 i, 60), 360 px, K = 1 at x = 0 (not centred, as the
    'centred' layout puts it at x = 180); a third face falls off the 720 px canvas as there."""
    rng = np.random.default_rng(k)
    crops = rng.integers(0, 256, (k, 512, 512, 3), dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(make_canvas(crops, 720, 480)), authors_canvas(crops))
    assert canvas_layout(k, 720, 480) == [(360 * i, 60, 360) for i in range(k)]
    assert FaceSettings().canvas_layout == "authors"
    # the same geometry on the tiny and rehearsal canvases: size W // 2, y centred
    assert canvas_layout(2, 128, 128) == [(0, 32, 64), (64, 32, 64)]
    assert canvas_layout(1, 96, 64) == [(0, 8, 48)]


def test_canvas_pastes_resized_crops_on_white():
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 200, (2, 112, 112, 3), dtype=np.uint8)
    canvas = np.asarray(make_canvas(crops, 720, 480))
    assert canvas.shape == (480, 720, 3)
    for i in range(2):
        expected = np.asarray(Image.fromarray(crops[i]).resize((360, 360), Image.Resampling.BICUBIC))
        np.testing.assert_array_equal(canvas[60:420, 360 * i:360 * (i + 1)], expected)
    assert (canvas[:60] == 255).all() and (canvas[420:] == 255).all()


@pytest.mark.parametrize("k", [1, 2, 3])
def test_end_to_end_shapes_and_placement(conditioner, photo_dir, dlib_analyzer, tiny_clip, k):
    paths = clean_photos(photo_dir, k)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FaceQualityWarning)  # clean photos: no doubts
        result = process_references(paths, conditioner, use_cache=False)
    assert result.crops.shape == (k, 112, 112, 3) and result.crops.dtype == np.uint8
    assert result.id_cond.shape == (k, 160) and result.id_cond.dtype == torch.float32
    assert [tuple(h.shape) for h in result.id_vit_hidden] == [(k, 65, 64)] * 5
    assert conditioner.id_embed_dim == 160 and conditioner.vit_dim == 64 and conditioner.vit_tokens == 65
    # id_cond = dlib vector (unit) ⊕ pooled CLIP (unit), in that order
    torch.testing.assert_close(result.id_cond[:, :128].norm(dim=-1), torch.ones(k))
    torch.testing.assert_close(result.id_cond[:, 128:].norm(dim=-1), torch.ones(k))
    for i, path in enumerate(paths):
        image = np.asarray(Image.open(path).convert("RGB"))
        face = max(dlib_analyzer.detect(image), key=lambda f: f.size)
        np.testing.assert_array_equal(result.faces[i].box, face.box)
        np.testing.assert_allclose(result.id_cond[i, :128].numpy(), dlib_analyzer.embed_face(image, face), atol=1e-6)
        np.testing.assert_array_equal(result.crops[i], dlib_analyzer.align(image, face, 112))
    features = tiny_clip.encode(result.crops, gray=True)
    torch.testing.assert_close(result.id_cond[:, 128:], features.pooled)
    # canvas: the crops at the stated layout, white elsewhere
    canvas = np.asarray(result.canvas)
    assert result.canvas.size == (720, 480) and result.canvas.mode == "RGB"
    mask = np.ones(canvas.shape[:2], bool)
    for crop, (x, y, size) in zip(result.crops, canvas_layout(k, 720, 480)):
        expected = np.asarray(Image.fromarray(crop).resize((size, size), Image.Resampling.BICUBIC))
        shown = canvas[y:y + size, x:x + size]  # the authors' layout puts a third face past the edge
        np.testing.assert_array_equal(shown, expected[:, :shown.shape[1]])
        mask[y:y + size, x:x + size] = False
    assert (canvas[mask] == 255).all()
    # different people: their identity vectors are below the same-person threshold
    vectors = result.id_cond[:, :128].numpy()
    sims = vectors @ vectors.T
    assert (sims[~np.eye(k, dtype=bool)] < dlib_analyzer.verification_threshold).all()


def test_two_faces_reference_canvas_placement(conditioner, photo_dir):
    result = process_references(clean_photos(photo_dir, 2), conditioner, use_cache=False)
    canvas = np.asarray(result.canvas)
    for i in range(2):
        face = np.asarray(Image.fromarray(result.crops[i]).resize((360, 360), Image.Resampling.BICUBIC))
        np.testing.assert_array_equal(canvas[60:420, 360 * i:360 * i + 360], face)


def test_cache_hit_on_rerun(conditioner, photo_dir, monkeypatch):
    paths = clean_photos(photo_dir, 2)
    first = process_references(paths, conditioner)
    assert not first.from_cache
    cache = conditioner.settings.cache_dir
    files = sorted(p.name for p in Path(cache).iterdir() if first.cache_key in p.name)
    assert files == [f"{first.cache_key}.json", f"{first.cache_key}.safetensors"]
    meta = json.loads((Path(cache) / f"{first.cache_key}.json").read_text())
    assert meta["id_cond_shape"] == [2, 160] and len(meta["faces"]) == 2

    def fail(*args, **kwargs):
        raise AssertionError("detect must not run on a cache hit")

    monkeypatch.setattr(conditioner.analyzer, "detect", fail)
    second = process_references(paths, conditioner)
    assert second.from_cache and second.cache_key == first.cache_key
    np.testing.assert_array_equal(second.crops, first.crops)
    torch.testing.assert_close(second.id_cond, first.id_cond, rtol=0, atol=0)
    for a, b in zip(second.id_vit_hidden, first.id_vit_hidden):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    np.testing.assert_array_equal(np.asarray(second.canvas), np.asarray(first.canvas))
    np.testing.assert_array_equal(second.faces[1].landmarks, first.faces[1].landmarks)
    monkeypatch.undo()
    # order matters (identity i is photo i); other settings give another key
    swapped = process_references(paths[::-1], conditioner)
    assert not swapped.from_cache
    torch.testing.assert_close(swapped.id_cond, first.id_cond.flip(0))
    other = FaceConditioner(conditioner.analyzer, conditioner.clip,
                            FaceSettings(crop_size=96, cache_dir=conditioner.settings.cache_dir))
    assert process_references(paths, other).cache_key != first.cache_key


def test_corrupt_cache_entry_is_recomputed(dlib_analyzer, tiny_clip, photo_dir, tmp_path):
    conditioner = FaceConditioner(dlib_analyzer, tiny_clip, FaceSettings(crop_size=64, cache_dir=str(tmp_path)))
    first = process_references([photo_dir / "person_1.png"], conditioner)
    (tmp_path / f"{first.cache_key}.safetensors").write_bytes(b"garbage")
    again = process_references([photo_dir / "person_1.png"], conditioner)
    assert not again.from_cache
    torch.testing.assert_close(again.id_cond, first.id_cond, rtol=0, atol=0)
    assert process_references([photo_dir / "person_1.png"], conditioner).from_cache  # rewritten


def test_cache_key_follows_photo_bytes_not_names(conditioner, photo_dir, tmp_path):
    source = photo_dir / "person_0.png"
    copy = tmp_path / "renamed.png"
    copy.write_bytes(source.read_bytes())
    a = process_references([source], conditioner)
    b = process_references([copy], conditioner)
    assert b.from_cache and b.cache_key == a.cache_key and b.paths == [str(copy)]
    Image.open(source).rotate(2).save(copy)
    assert process_references([copy], conditioner).cache_key != a.cache_key


def test_deterministic_without_cache(conditioner, photo_dir):
    paths = clean_photos(photo_dir, 2)
    a = process_references(paths, conditioner, use_cache=False)
    b = process_references(paths, conditioner, use_cache=False)
    torch.testing.assert_close(a.id_cond, b.id_cond, rtol=0, atol=0)
    np.testing.assert_array_equal(np.asarray(a.canvas), np.asarray(b.canvas))


def test_build_from_plain_dict_tiny_canvas(photo_dir, tmp_path):
    conditioner = build_face_conditioner({"backend": "dlib", "backend_options": {"upsample": 1}, "clip": "tiny",
                                          "clip_seed": 0, "crop_size": 64, "canvas_width": 64, "canvas_height": 64,
                                          "cache_dir": str(tmp_path / "cache")})
    assert conditioner.id_embed_dim == 160 and conditioner.vit_dim == 64
    result = conditioner(clean_photos(photo_dir, 2))
    assert result.canvas.size == (64, 64) and result.crops.shape == (2, 64, 64, 3)
    canvas = np.asarray(result.canvas)
    np.testing.assert_array_equal(canvas[16:48, 0:32],
                                  np.asarray(Image.fromarray(result.crops[0]).resize((32, 32), Image.Resampling.BICUBIC)))
    assert (canvas[:16] == 255).all() and (canvas[48:] == 255).all()


def test_raw_recognizer_vectors(dlib_analyzer, tiny_clip, photo_dir):
    conditioner = FaceConditioner(dlib_analyzer, tiny_clip, FaceSettings(crop_size=64, id_vector="raw"))
    result = conditioner(clean_photos(photo_dir, 2), use_cache=False)
    norms = result.id_cond[:, :128].norm(dim=-1)
    assert ((norms > 1.3) & (norms < 1.65)).all()  # dlib's unnormalised descriptors


@pytest.mark.parametrize("data, message", [
    ({"crop": 112}, r"faces\.crop: unknown key; allowed keys here: .*crop_size"),
    ({"id_vector": "unit"}, r"faces\.id_vector: Input should be 'normalized' or 'raw' \(got 'unit'\)"),
    ({"canvas_width": 0}, r"faces\.canvas_width: Input should be greater than 0 \(got 0\)"),
    ({"crop_size": -8}, r"faces\.crop_size: Input should be greater than 0 \(got -8\)"),
    ({"max_long_edge": 0}, r"faces\.max_long_edge: Input should be greater than 0 \(got 0\)"),
    ({"clip": "huge"}, r"faces\.clip: Input should be 'tiny' or 'full' \(got 'huge'\)"),
    ({"canvas_layout": "grid"}, r"faces\.canvas_layout: Input should be 'authors' or 'centred' \(got 'grid'\)"),
])
def test_settings_errors_name_the_key_the_value_and_the_allowed_values(data, message):
    with pytest.raises(ParamsError, match=message):
        validate_model(FaceSettings, data, "faces")


def test_settings_from_params_data():
    settings = validate_model(FaceSettings, {"backend_options": None, "max_long_edge": None, "canvas_layout": "centred"}, "faces")
    assert settings.backend_options == {} and settings.max_long_edge is None and settings.canvas_layout == "centred"
    assert FaceSettings(crop_size=96) == validate_model(FaceSettings, {"crop_size": 96}, "faces")
    with pytest.raises(ValueError, match="id_vector"):  # direct construction checks too
        FaceSettings(id_vector="unit")
    with pytest.raises(ParamsError, match=r"faces\.crop: unknown key"):  # built from a dict as params are
        build_face_conditioner({"crop": 112})
    with pytest.raises(ValueError, match="unknown face backend 'mtcnn'"):
        build_face_conditioner({"backend": "mtcnn"})


def test_input_errors(conditioner):
    with pytest.raises(ValueError, match="at least one reference photo"):
        process_references([], conditioner)
    with pytest.raises(TypeError, match="list of paths"):
        process_references("photo.png", conditioner)


def test_insightface_profile_on_fakes(tmp_path, tiny_clip):
    """The same pipeline on the insightface backend (exported ONNX fakes): id_cond [K, 512 + 32]."""
    from tests.faces.onnx_fakes import marker_image, write_fake_antelopev2

    write_fake_antelopev2(tmp_path / "root")
    paths = []
    for i, corner in enumerate([(200, 160), (320, 240)]):
        image = marker_image(640, 480, [corner])
        image[image[..., 0] == 0, 1] = np.uint8(60 * i)  # different backgrounds for the two identities
        Image.fromarray(image).save(tmp_path / f"id{i}.png")
        paths.append(tmp_path / f"id{i}.png")
    conditioner = build_face_conditioner({"backend": "insightface", "model_dir": str(tmp_path / "root"),
                                          "crop_size": 112, "canvas_width": 720, "canvas_height": 480})
    result = conditioner(paths)
    assert conditioner.id_embed_dim == 544
    assert result.id_cond.shape == (2, 544) and [tuple(h.shape) for h in result.id_vit_hidden] == [(2, 65, 64)] * 5
    np.testing.assert_allclose(result.faces[0].box, [168, 128, 232, 192], atol=1e-3)
    torch.testing.assert_close(result.id_cond[:, :512].norm(dim=-1), torch.ones(2))
