"""The HTML report (structure, PNGs, headless Chromium rendering) and MLflow logging."""

import json
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from eval.aggregate import flat_items, split_by_k
from eval.baselines import make_no_face, make_oracle
from eval.face_backends import AnalyzerPool
from study.mlflow_eval import log_to_mlflow
from eval.params import EvalParams
from eval.report import main as report_main
from eval.report import render_report
from eval.run import evaluate

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, make_benchmark, dlib_analyzer):
    root = tmp_path_factory.mktemp("report")
    bench = make_benchmark(root / "bench", {"duo": ("astronaut", "grace")})
    methods = {"oracle": make_oracle(bench, root / "oracle", dlib_analyzer, n_frames=6),
               "no_face": make_no_face(bench, root / "no_face", n_frames=6)}
    evaluate(bench, methods, root / "eval", EvalParams(max_frames=6, face_frame_stride=2),
             analyzers=AnalyzerPool(analyzers={"dlib": dlib_analyzer}))
    return root / "eval"


class Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.rows, self.cells = [], 0, []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.imgs.append(attrs["src"])
        elif tag == "tr":
            self.rows += 1
        elif tag == "td":
            self.cells.append(attrs.get("class"))


def test_report_structure_and_pngs(run_dir):
    index = render_report(run_dir)
    assert index == run_dir / "report" / "index.html"
    page = Collect()
    page.feed(index.read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    n_metrics = len({n for m in metrics.values() for n in split_by_k(m)[0]})
    # overall table (header + one row per method), then the per-K table (all cases have K = 2)
    assert page.rows == 2 * (1 + len(metrics))
    assert sorted(k for m in metrics.values() for k in m["by_k"]) == ["2", "2"]
    assert sum(1 for s in page.imgs if s.startswith("bars_")) == n_metrics
    assert page.imgs.count("strip_duo.png") == 1
    assert "missing" in page.cells  # clip_score has no weights
    for src in page.imgs:
        img = np.asarray(Image.open(index.parent / src).convert("RGB"))
        assert img.shape[0] > 100 and img.shape[1] > 100
        assert img.std() > 10, f"{src} looks blank"
    strip = np.asarray(Image.open(index.parent / "strip_duo.png").convert("RGB")).astype(int)
    # identity boxes are drawn in the id0 / id1 colours (#e6194b red, #3cb44b green)
    for colour in ((0xE6, 0x19, 0x4B), (0x3C, 0xB4, 0x4B)):
        assert (np.abs(strip - colour).sum(-1) < 30).sum() > 50
    text = index.read_text()
    assert "face_sim/dlib" in text and "no CLIP weights configured" in text
    assert "By identity count K" in text and "class='banner'" not in text


def test_tiny_profile_report_carries_the_banner_above_the_table(run_dir, tmp_path):
    """The banner is decided by the profile the report is given (dvc passes prepare.profile)."""
    report_main(["--eval", str(run_dir), "--out", str(tmp_path / "tiny"), "--profile", "tiny", "--max-cases", "0"])
    text = (tmp_path / "tiny" / "index.html").read_text()
    assert "class='banner'" in text and "noise by design" in text and "oracle" in text and "routing_acc" in text
    assert text.index("class='banner'") < text.index("<table")
    full = render_report(run_dir, tmp_path / "full", profile="full", max_cases=0).read_text()
    assert "class='banner'" not in full and "noise by design" not in full
    with pytest.raises(ValueError, match="profile must be one of"):
        render_report(run_dir, tmp_path / "bad", profile="test")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    index = render_report(run_dir, tmp_path / "report")
    shot = tmp_path / "shot.png"
    subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={shot}", "--window-size=1200,2400", index.as_uri()],
                   check=True, capture_output=True, timeout=120)
    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert img.shape[:2] == (2400, 1200)
    non_white = (img.sum(-1) < 700).mean()
    assert non_white > 0.03, f"screenshot is nearly blank ({non_white:.3%} non-white)"
    assert len(np.unique(img.reshape(-1, 3) // 16, axis=0)) > 20  # charts and frames, not just text


def test_log_to_mlflow_one_run_per_method(run_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))  # the project root: the artifacts go to its mlruns/
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ids = log_to_mlflow(run_dir, uri, "eval-test", tags={"profile": "tiny"})
    assert sorted(ids) == ["no_face", "oracle"]
    client = MlflowClient(tracking_uri=uri)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for method, run_id in ids.items():
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert run.data.tags["method"] == method and run.data.tags["stage"] == "evaluate"
        assert run.data.tags["profile"] == "tiny" and run.data.tags["git_revision"]
        assert run.data.metrics == pytest.approx(dict(flat_items(metrics[method])))
        assert run.data.metrics["by_k.2.face_sim/dlib"] == pytest.approx(metrics[method]["by_k"]["2"]["face_sim/dlib"])
        assert run.data.params["eval.max_frames"] == "6"
        assert "no CLIP weights configured" in run.data.tags["missing.clip_score"]
        assert {a.path for a in client.list_artifacts(run_id)} >= {"metrics.json", "per_video.jsonl"}
    assert (tmp_path / "mlruns").is_dir()


def test_tiny_banner_cites_the_vae_roundtrip_row_and_routing_baselines_are_shown(tmp_path):
    from eval.report import banner, routing_section

    metrics = {"vae_roundtrip": {"face_sim/dlib": 0.0123, "face_found/dlib": 0.0, "by_k": {}},
               "oracle": {"face_sim/dlib": 0.815, "face_found/dlib": 1.0, "by_k": {}}}
    text = banner("tiny", metrics, {}, "dlib")
    assert "vae_roundtrip" in text and "face_sim/dlib 0.012 (oracle 0.815)" in text
    assert "no vae_roundtrip row was evaluated here" in banner("tiny", {"oracle": metrics["oracle"]}, {}, "dlib")
    log = tmp_path / "val_log.csv"
    log.write_text("step,split,val_loss,routing_acc,routing_acc_majority,routing_acc_chance\n"
                   "0,heldout,1.0,0.5,0.6,0.5\n4,heldout,0.9,0.667,0.6,0.5\n5,heldout,0.9,,,\n")
    html_text = "".join(routing_section({"stage2": log, "absent": tmp_path / "none.csv"}))
    assert "<td>stage2</td><td>heldout</td><td>4</td>" in html_text and "0.667" in html_text and "0.6" in html_text
    assert routing_section({}) == []


def test_frame_strip_of_a_method_without_the_case_video(run_dir, tmp_path):
    """A method that declares a case absent (absent.json, e.g. vae_roundtrip without ground truth)
    gets a 'no video' row in the strip, not a crash."""
    from eval.report import case_strip
    from eval.run_layout import RunLayout
    from ingredients.sampling.benchmark import read_benchmark

    sources = json.loads((run_dir / "sources.json").read_text())
    (case,) = read_benchmark(sources["benchmark"])
    methods = {"oracle": Path(sources["methods"]["oracle"]), "absent": tmp_path / "empty"}
    png = case_strip(tmp_path / "strip.png", case, methods, RunLayout(run_dir), "dlib", 6, 2, 4)
    assert np.asarray(Image.open(png)).std() > 10
