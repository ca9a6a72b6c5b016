"""Aggregates overall and per identity count K, from hand-made per-video records."""

import json

import numpy as np
import pytest

from eval.aggregate import aggregate, flat_items
from eval.params import EvalParams
from eval.report import by_k_table, metrics_table
from eval.run_layout import RunLayout, save_faces
from eval.video_faces import VideoFaces

PARAMS = EvalParams(metrics=("face_sim", "flicker", "fid_face"))
RECORDS = [
    {"method": "m", "case_id": "solo", "metrics": {"face_sim/dlib": 0.9, "face_sim/dlib/id0": 0.9, "flicker": 0.5},
     "missing": {}},
    {"method": "m", "case_id": "duo", "metrics": {"face_sim/dlib": 0.5, "face_sim/dlib/id0": 0.6}, "missing": {"flicker": "x"}},
]


@pytest.fixture
def layout(tmp_path, make_benchmark):
    bench = make_benchmark(tmp_path / "bench", {"solo": ("hanks",), "duo": ("astronaut", "grace")})
    layout = RunLayout(tmp_path / "eval")
    layout.root.mkdir()
    layout.sources.write_text(json.dumps({"benchmark": str(bench), "methods": {}}))
    return layout


def test_metrics_overall_and_per_identity_count(layout):
    metrics, missing = aggregate(RECORDS, PARAMS, layout)
    assert metrics == {"m": {
        "face_sim/dlib": pytest.approx(0.7), "flicker": 0.5,
        "by_k": {"1": {"face_sim/dlib": 0.9, "flicker": 0.5}, "2": {"face_sim/dlib": 0.5}}}}
    gaps = missing["m"]
    assert gaps["flicker"] == "averaged over 1 of 2 videos; missing in 1: x"
    assert gaps["by_k"]["2"]["flicker"] == "missing in all 1 videos: x"
    assert "no video of this method has a 'dlib' face analysis" in gaps["by_k"]["1"]["fid_face/dlib"]
    # MLflow logs by_k flattened; the report shows both tables
    assert dict(flat_items(metrics["m"])) == pytest.approx({
        "face_sim/dlib": 0.7, "flicker": 0.5, "by_k.1.face_sim/dlib": 0.9, "by_k.1.flicker": 0.5,
        "by_k.2.face_sim/dlib": 0.5})
    assert "by_k" not in metrics_table(metrics, missing)
    table = by_k_table(metrics, missing)
    assert table.count("<tr>") == 3 and "<th>2</th><th>m</th><td>0.5</td>" in table
    assert 'title="missing in all 1 videos: x">missing</td>' in table


def test_identity_count_falls_back_to_the_stored_face_analysis(tmp_path, caplog):
    layout = RunLayout(tmp_path / "eval")
    layout.root.mkdir()
    refs = np.eye(4, dtype=np.float32)[:2]
    save_faces(layout.cache_faces("m", "duo"), {"dlib": VideoFaces("dlib", 0.9, 1, refs, np.zeros(0, np.int64),
                                                                   np.zeros((0, 4), np.float32), np.zeros((0, 4), np.float32))})
    metrics, _ = aggregate(RECORDS, EvalParams(metrics=("face_sim",)), layout)
    assert metrics["m"]["by_k"] == {"2": {"face_sim/dlib": 0.5}}  # "solo" has neither: left out, with a warning
    assert "K unknown for 1 cases" in caplog.text


def test_a_name_missing_in_some_videos_and_valued_in_none_says_how_many():
    from eval.aggregate import aggregate_video_metrics

    records = [{"case_id": "a", "metrics": {"flicker": 1.0}, "missing": {"face_sim": "no video: no ground truth"}},
               {"case_id": "b", "metrics": {"flicker": 0.5}, "missing": {}}]
    _, missing = aggregate_video_metrics(records)
    assert missing["face_sim"] == "missing in 1 of 2 videos, no value in any: no video: no ground truth"
