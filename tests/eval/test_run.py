"""The evaluation runner end to end on real faces: oracle vs no-face baselines."""

import json
import shutil

import numpy as np
import pytest
import yaml
from safetensors.numpy import save_file

import eval.run as run_module
import eval.video_job as video_job
from eval.baselines import make_no_face, make_oracle
from eval.face_backends import AnalyzerPool
from eval.merge import merge_runs
from eval.params import EvalParams
from eval.run import evaluate, main, parse_method, parse_shard
from eval.run_layout import RunLayout, read_records

N_FRAMES = 12
PARAMS = EvalParams(max_frames=N_FRAMES, face_frame_stride=3)
PAIRS = {"pair_a": ("astronaut", "grace"), "pair_b": ("hanks", "t1_a")}


@pytest.fixture(scope="module")
def setup(tmp_path_factory, make_benchmark, dlib_analyzer):
    root = tmp_path_factory.mktemp("run")
    bench = make_benchmark(root / "bench", PAIRS)
    methods = {
        "oracle": make_oracle(bench, root / "oracle", dlib_analyzer, n_frames=N_FRAMES),
        "oracle_carphone": make_oracle(bench, root / "oracle_carphone", dlib_analyzer, n_frames=N_FRAMES, background="carphone"),
        "no_face": make_no_face(bench, root / "no_face", n_frames=N_FRAMES),
    }
    # routing maps for one no_face case: 3 of 4 labelled tokens routed right at point 0, all at point 1
    mask = np.array([0, 1, 1, -1, 0], dtype=np.int64)
    r0 = np.array([[1, 0], [0, 1], [1, 0], [0, 1], [1, 0]], dtype=np.float32)
    r1 = np.array([[1, 0], [0, 1], [0, 1], [1, 0], [1, 0]], dtype=np.float32)
    save_file({"routing.0": r0, "routing.1": r1, "index_mask": mask}, str(methods["no_face"] / "pair_a.routing.safetensors"))
    pool = AnalyzerPool(analyzers={"dlib": dlib_analyzer})
    full = evaluate(bench, methods, root / "full", PARAMS, analyzers=pool)
    return {"root": root, "bench": bench, "methods": methods, "pool": pool, "full": full}


def test_records_and_aggregates(setup):
    layout = RunLayout(setup["root"] / "full")
    records = read_records(layout.per_video)
    assert [(r["method"], r["case_id"]) for r in records] == sorted(
        (m, c) for m in setup["methods"] for c in PAIRS)
    oracle = {r["case_id"]: r for r in records if r["method"] == "oracle"}["pair_a"]
    assert set(oracle["metrics"]) >= {"face_sim/dlib", "face_sim/dlib/id0", "face_sim/dlib/id1", "face_sim_max/dlib",
                                      "face_found/dlib", "id_confusion/dlib", "dynamic_degree", "flow_magnitude", "flicker"}
    assert oracle["missing"]["clip_score"].startswith("no CLIP weights configured")
    assert "no routing maps" in oracle["missing"]["routing_acc"]
    metrics = json.loads(layout.metrics.read_text())
    assert metrics == setup["full"]
    for oracle_name in ("oracle", "oracle_carphone"):
        assert metrics[oracle_name]["face_sim/dlib"] > 0.95
        assert metrics[oracle_name]["face_found/dlib"] == 1.0
        assert metrics[oracle_name]["id_confusion/dlib"] == 0.0
        assert metrics[oracle_name]["face_sim_opens2v/dlib"] > 0.8  # largest face vs the first reference only
        assert metrics[oracle_name]["by_k"]["2"]["face_sim/dlib"] == metrics[oracle_name]["face_sim/dlib"]
    assert metrics["no_face"]["face_sim/dlib"] == 0.0
    assert metrics["no_face"]["face_found/dlib"] == 0.0
    # no face in the floor's videos: no value for what needs a face, with the reason
    for name in ("face_sim_max/dlib", "id_confusion/dlib", "face_sim_opens2v/dlib"):
        assert name not in metrics["no_face"]
    assert "face_sim/dlib/id0" not in metrics["oracle"]  # per-identity values are not aggregated
    # routing maps exist for one no_face case only: point 0 = 3/4, point 1 = 4/4
    assert metrics["no_face"]["routing_acc/0"] == pytest.approx(0.75)
    assert metrics["no_face"]["routing_acc"] == pytest.approx(0.875)
    missing = json.loads(layout.missing.read_text())
    assert missing["no_face"]["routing_acc"].startswith("averaged over 1 of 2 videos")
    assert missing["oracle"]["clip_score"].startswith("missing in all 2 videos: no CLIP weights configured")
    assert "too few face samples" in missing["oracle"]["fid_face/dlib"]
    assert "no face found by 'dlib'" in missing["no_face"]["id_confusion/dlib"]
    assert "no face in any of the 32 sampled frames" in missing["no_face"]["face_sim_opens2v/dlib"]


# slow: the default suite measured 19 min 24 s on a fresh clone with it (budget 15); runs under -m slow
@pytest.mark.slow
def test_identical_inputs_give_identical_metrics_json(setup, tmp_path):
    """A fresh run through the CLI (own analyzer, no cache) writes byte-identical outputs."""
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"eval": {"max_frames": N_FRAMES, "face_frame_stride": 3}}))
    argv = ["--benchmark", str(setup["bench"]), "--out", str(tmp_path / "again"), "--params", str(params)]
    for name, folder in setup["methods"].items():
        argv += ["--method", f"{name}={folder}"]
    main(argv)
    full = RunLayout(setup["root"] / "full")
    again = RunLayout(tmp_path / "again")
    assert again.metrics.read_bytes() == full.metrics.read_bytes()
    assert again.per_video.read_bytes() == full.per_video.read_bytes()


# slow: the default suite measured 19 min 24 s on a fresh clone with it (budget 15); runs under -m slow
@pytest.mark.slow
def test_split_runs_merge_to_the_same_aggregates(setup, tmp_path):
    m = setup["methods"]
    two = {k: m[k] for k in ("oracle", "no_face")}
    evaluate(setup["bench"], two, tmp_path / "s0", PARAMS, shard=(0, 2), analyzers=setup["pool"])
    evaluate(setup["bench"], two, tmp_path / "s1", PARAMS, shard=(1, 2), analyzers=setup["pool"])
    evaluate(setup["bench"], {"oracle_carphone": m["oracle_carphone"]}, tmp_path / "m", PARAMS, analyzers=setup["pool"])
    merged = merge_runs([tmp_path / "s1", tmp_path / "m", tmp_path / "s0"], tmp_path / "merged")
    assert merged == setup["full"]
    full = RunLayout(setup["root"] / "full")
    assert (tmp_path / "merged" / "metrics.json").read_bytes() == full.metrics.read_bytes()
    assert (tmp_path / "merged" / "per_video.jsonl").read_bytes() == full.per_video.read_bytes()
    # runs made with other params do not merge
    evaluate(setup["bench"], two, tmp_path / "other", EvalParams(max_frames=N_FRAMES, metrics=("flicker",)),
             analyzers=setup["pool"])
    with pytest.raises(ValueError, match="different params"):
        merge_runs([tmp_path / "s0", tmp_path / "other"], tmp_path / "bad")


def test_rerun_resumes_from_the_cache(setup, tmp_path, monkeypatch):
    out = tmp_path / "resume"
    shutil.copytree(setup["root"] / "full", out)
    calls = []
    real = video_job.evaluate_video
    monkeypatch.setattr(video_job, "evaluate_video", lambda ctx: calls.append(ctx.case.case_id) or real(ctx))
    assert evaluate(setup["bench"], setup["methods"], out, PARAMS, analyzers=setup["pool"]) == setup["full"]
    assert calls == []
    # a changed video is re-evaluated, nothing else
    folder = tmp_path / "no_face_copy"
    shutil.copytree(setup["methods"]["no_face"], folder)
    shutil.copyfile(setup["methods"]["oracle"] / "pair_b.mp4", folder / "pair_b.mp4")
    evaluate(setup["bench"], {**setup["methods"], "no_face": folder}, out, PARAMS, analyzers=setup["pool"])
    assert calls == ["pair_b"]
    rec = {r["case_id"]: r for r in read_records(RunLayout(out).per_video) if r["method"] == "no_face"}
    assert rec["pair_b"]["metrics"]["face_sim/dlib"] > 0.9


def test_bad_inputs_are_named(setup, tmp_path):
    folder = tmp_path / "partial"
    folder.mkdir()
    shutil.copyfile(setup["methods"]["oracle"] / "pair_a.mp4", folder / "pair_a.mp4")
    with pytest.raises(FileNotFoundError, match=r"method 'partial': 1 of 2 videos missing .*pair_b.mp4"):
        evaluate(setup["bench"], {"partial": folder}, tmp_path / "o", PARAMS)
    with pytest.raises(KeyError, match="unknown metric 'nope'"):
        evaluate(setup["bench"], {"partial": folder}, tmp_path / "o", EvalParams(metrics=("nope",)))
    with pytest.raises(ValueError, match="expected NAME=DIR"):
        parse_method("oracle")
    with pytest.raises(ValueError, match="method name"):
        parse_method("a/b=dir")
    with pytest.raises(ValueError, match="0 <= I < N"):
        parse_shard("2/2")


def test_unavailable_backend_is_reported_missing(setup, tmp_path):
    params = EvalParams(max_frames=N_FRAMES, metrics=("face_sim", "fid_face", "flicker"),
                        face_backend_options={"dlib": {"model_dir": str(tmp_path / "no_models")}})
    metrics = evaluate(setup["bench"], {"oracle": setup["methods"]["oracle"]}, tmp_path / "o", params)
    assert set(metrics["oracle"]) == {"flicker", "by_k"} and set(metrics["oracle"]["by_k"]["2"]) == {"flicker"}
    missing = json.loads((tmp_path / "o" / "missing.json").read_text())["oracle"]
    assert "face backend 'dlib' unavailable: FileNotFoundError: dlib model file missing" in missing["face_sim/dlib"]
    assert "no video of this method has a 'dlib' face analysis" in missing["fid_face/dlib"]
    with pytest.raises(ValueError, match=r"eval.face_backends: unknown backend\(s\) \['nosuch'\]"):
        evaluate(setup["bench"], {"oracle": setup["methods"]["oracle"]}, tmp_path / "o2",
                 EvalParams(face_backends=("nosuch",)))


def test_unreadable_videos_are_counted_missing_not_fatal(setup, tmp_path):
    """A corrupt and a zero-length output video: their metrics are missing with the reason, the
    method's other videos are still evaluated, and the run completes."""
    folder = tmp_path / "broken"
    shutil.copytree(setup["methods"]["oracle"], folder)
    (folder / "pair_a.mp4").write_bytes(b"")
    data = (setup["methods"]["oracle"] / "pair_b.mp4").read_bytes()
    (folder / "pair_b.mp4").write_bytes(data[: len(data) // 4])
    metrics = evaluate(setup["bench"], {"broken": folder, "oracle": setup["methods"]["oracle"]}, tmp_path / "out",
                       PARAMS, analyzers=setup["pool"])
    records = {r["case_id"]: r for r in read_records(RunLayout(tmp_path / "out").per_video) if r["method"] == "broken"}
    assert records["pair_a"]["metrics"] == {}
    assert records["pair_a"]["missing"]["face_sim"].startswith("unreadable video: video file is empty (0 bytes)")
    assert set(records["pair_a"]["missing"]) == set(PARAMS.metrics)
    assert records["pair_b"]["missing"]["flicker"].startswith("unreadable video: cannot decode video")
    assert metrics["oracle"] == setup["full"]["oracle"]  # the good method is unaffected
    missing = json.loads(RunLayout(tmp_path / "out").missing.read_text())
    assert missing["broken"]["face_sim"].startswith("missing in all 2 videos: unreadable video")


def test_weights_replaced_in_place_invalidate_the_cache_key(setup, tmp_path, monkeypatch):
    """The cache key holds the content of weight files the params name, not only their paths."""
    from ingredients.sampling.benchmark import read_benchmark
    from eval.context import VideoContext
    from eval.params import ClipParams

    weights = tmp_path / "clip.safetensors"
    weights.write_bytes(b"first weights")
    params = EvalParams(max_frames=N_FRAMES, clip=ClipParams(model="ViT-B-32", weights=str(weights)))
    case = read_benchmark(setup["bench"])[0]

    def key() -> str:
        run_module.weights_digest.cache_clear()  # a new process sees the new file
        return run_module.fingerprint(VideoContext("oracle", setup["methods"]["oracle"], case, params, setup["pool"]))

    first = key()
    assert key() == first
    weights.write_bytes(b"other weights")
    assert key() != first
    assert run_module.weights_digest(json.dumps({"a": str(weights), "b": [str(tmp_path / "absent.bin")]})) == {
        str(weights): run_module.file_sha256(weights)}
    # names that are not paths are not looked up, even when a file of that name exists here
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dlib").write_text("not weights")
    assert run_module.weights_digest(json.dumps({"backend": "dlib", "w": str(weights)})) == {
        str(weights): run_module.file_sha256(weights)}
