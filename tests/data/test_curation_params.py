"""Curation settings: defaults, YAML loading, and errors that name the bad key."""

from __future__ import annotations

import pytest

from ingredients.config import ParamsError, load_params, section
from ingredients.data.curation_params import CurationParams, params_from_mapping


def load_curation_params(path):
    """What `python -m ingredients.data.curate --params FILE` reads."""
    return params_from_mapping(section(load_params(path), "curate", path, required=True))


def test_defaults_and_yaml_section(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("train:\n  lr: 1.0e-4\ncurate:\n  detect_stride: 2\n  masker: landmarks\n")
    params = load_curation_params(p)
    assert params.detect_stride == 2 and params.masker == "landmarks"
    assert params.min_face_size == CurationParams().min_face_size
    p.write_text("curate:\n")
    assert load_curation_params(p) == CurationParams()


@pytest.mark.parametrize(
    "mapping, message",
    [
        ({"detect_strid": 2}, "curate.detect_strid: unknown key; allowed keys here: adaptive_threshold, analyzer"),
        ({"detect_stride": 0}, "curate.detect_stride: Input should be greater than or equal to 1 (got 0)"),
        ({"masker": "bisenet"}, "curate.masker: Input should be 'box' or 'landmarks'"),
        ({"cluster_threshold": 3}, "curate.cluster_threshold: Input should be less than or equal to 1"),
        ({"min_visible_fraction": "half"}, "curate.min_visible_fraction: Input should be a valid number"),
    ],
)
def test_bad_values_name_the_key(mapping, message):
    with pytest.raises(ValueError) as err:
        params_from_mapping(mapping)
    assert message in str(err.value)


def test_missing_file_or_section(tmp_path):
    with pytest.raises(FileNotFoundError, match="params file not found"):
        load_curation_params(tmp_path / "nope.yaml")
    p = tmp_path / "params.yaml"
    p.write_text("train: {}\n")
    with pytest.raises(ParamsError, match="no `curate:` section"):
        load_curation_params(p)
    p.write_text("curate:\n  detect_stride: x\n")
    with pytest.raises(ValueError, match=r"curate.detect_stride: Input should be a valid integer"):
        load_curation_params(p)


def test_fingerprint_tracks_result_changing_settings_only():
    base = CurationParams()
    assert base.fingerprint() == CurationParams(num_workers=4, contact_sheet_clips=2).fingerprint()
    assert base.fingerprint() != CurationParams(min_clip_frames=9).fingerprint()
