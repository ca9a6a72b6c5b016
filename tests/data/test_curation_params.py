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
        ({"max_clip_seconds": 0}, "curate.max_clip_seconds: Input should be greater than 0 (got 0)"),
        ({"detect_max_side": 10}, "curate.detect_max_side: Input should be greater than or equal to 64 (got 10)"),
        ({"mask_max_side": "big"}, "curate.mask_max_side: Input should be a valid integer"),
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


ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("override", "message"), [
    ("curate: {analyzer: dlibb}", "curate.analyzer: Value error, unknown face backend; allowed: curricularface, dlib, insightface"),
    ("curate: {analyzer_options: {dlib: {upsmple: 1}}}",
     "curate.analyzer_options: Value error, dlib: unknown option(s) upsmple; allowed: landmark_model, min_score"),
    ("curate: {analyzer_options: {upsample: 1}}", "curate.analyzer_options.upsample: Input should be a valid dictionary"),
    ("data: {source: list, list_file: clips.jsonl, captions_file: c.csv}",
     "data.captions_file: Value error, only for source 'videos' or 'synth'"),
])
def test_cross_field_rules_through_study_params(tmp_path, override, message):
    """Issue 20: `python -m study.params params.yaml bad.yaml` passed what the curate stage refuses
    (its `main`, in-process: a subprocess costs a minute of imports on a loaded machine)."""
    from study.params import main

    bad = tmp_path / "bad.yaml"
    bad.write_text(override + "\n")
    with pytest.raises(SystemExit) as exit_:
        main([str(ROOT / "params.yaml"), str(bad)])
    assert message in str(exit_.value.code)


def test_a_profile_switch_passes_only_the_selected_backends_options():
    """Issue 20: params.yaml + profiles/full.yaml + profiles/rehearsal.yaml kept the tiny profile's dlib
    `upsample: 1` beside insightface's `model_dir`, and insightface refused `upsample`."""
    from ingredients.config import load_merged

    merged = load_merged(ROOT / "params.yaml", (ROOT / "profiles" / "full.yaml", ROOT / "profiles" / "rehearsal.yaml"))
    params = params_from_mapping(merged["curate"])
    assert params.analyzer == "insightface"
    assert params.options == {"model_dir": "weights_rehearsal/face_encoder/models/antelopev2"}
    tiny = params_from_mapping(load_params(ROOT / "params.yaml")["curate"])
    assert (tiny.analyzer, tiny.options) == ("dlib", {"upsample": 1})
    # another backend's entry does not change the per-video results' fingerprint
    assert tiny.fingerprint() == params_from_mapping({**load_params(ROOT / "params.yaml")["curate"],
                                                      "analyzer_options": {"dlib": {"upsample": 1}}}).fingerprint()
