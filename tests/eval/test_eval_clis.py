"""eval/README.md's commands that no DVC stage runs, through their `main` (test-sized: two cases, 4 frames
of 64 x 64, one cheap metric): the `no_face` and `target_oracle` baselines, `eval.run` in two shards
(`--shard I/N`) and `eval.merge` of the shards, equal to one unsharded run. The metrics' values are
tested in tests/eval/test_run.py; the oracle, the VAE round trip, the runner and the report run as
dvc.yaml stages in the session's run of the README's first command (tests/conftest.py
`readme_project`, slow, run by `.ci/run`)."""

from __future__ import annotations

import json

import yaml

from eval.baselines import main as baselines_main
from eval.merge import main as merge_main
from eval.run import main as run_main
from tests.eval.test_copy_paste import with_targets

PAIRS = {"pair_a": ("astronaut", "grace"), "pair_b": ("hanks", "t1_a")}


def test_baselines_then_two_shards_merged_equal_one_run(tmp_path, make_benchmark, photos):
    bench = with_targets(make_benchmark(tmp_path / "bench", PAIRS), photos)  # target_oracle pastes the targets
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"baselines": {"num_frames": 4, "size": 64},
                                      "eval": {"metrics": ["flicker", "face_found"], "max_frames": 4}}))
    for kind in ("no_face", "target_oracle"):
        baselines_main([kind, "--benchmark", str(bench), "--out", str(tmp_path / kind), "--params", str(params)])
        assert sorted(p.stem for p in (tmp_path / kind).glob("*.mp4")) == sorted(PAIRS), kind
    methods = ["--method", f"no_face={tmp_path / 'no_face'}", "--method", f"target_oracle={tmp_path / 'target_oracle'}"]
    for shard in ("0/2", "1/2"):
        run_main(["--benchmark", str(bench), *methods, "--out", str(tmp_path / f"eval_s{shard[0]}"),
                  "--params", str(params), "--shard", shard])
    run_main(["--benchmark", str(bench), *methods, "--out", str(tmp_path / "one"), "--params", str(params)])
    merge_main(["--runs", str(tmp_path / "eval_s0"), str(tmp_path / "eval_s1"), "--out", str(tmp_path / "eval")])
    merged, one = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("eval", "one"))
    assert merged == one and set(one) == {"no_face", "target_oracle"}
    assert (tmp_path / "eval" / "per_video.jsonl").read_bytes() == (tmp_path / "one" / "per_video.jsonl").read_bytes()
