"""`eval.run --methods-dir` evaluates every sub-folder as a method, named after it."""

from __future__ import annotations

import json

import pytest

from eval.baselines import make_no_face
from eval.run import main
from instruments.photo_cases import write_photo_cases


def test_methods_dir_names_methods_after_subfolders(tmp_path):
    bench = write_photo_cases(tmp_path / "bench", pairs={"astronaut_grace": ("astronaut", "grace")})
    for name in ("a", "b"):
        make_no_face(bench, tmp_path / "samples" / name, n_frames=3, size=64)
    main(["--benchmark", str(bench), "--methods-dir", str(tmp_path / "samples"), "--out", str(tmp_path / "eval")])
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert sorted(metrics) == ["a", "b"]
    assert metrics["a"]["face_sim/dlib"] == 0.0  # no faces in the no-face floor


def test_methods_dir_without_subfolders_is_an_error(tmp_path):
    bench = write_photo_cases(tmp_path / "bench", pairs={"astronaut_grace": ("astronaut", "grace")})
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit):
        main(["--benchmark", str(bench), "--methods-dir", str(tmp_path / "empty"), "--out", str(tmp_path / "eval")])
