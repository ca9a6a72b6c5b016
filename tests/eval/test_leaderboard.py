"""The OpenS2V-Eval leaderboard CSV: their columns, FaceSim in their aggregation (faceless = 0), and
the report's face_sim vs copy_paste plot."""

from __future__ import annotations

import csv
import io

import numpy as np
from PIL import Image

from eval.leaderboard import COLUMNS, leaderboard_csv
from eval.report import comparability_section, copy_paste_plot

METRICS = {
    "ours": {"face_sim_opens2v/curricularface": 0.62, "face_sim_opens2v/curricularface/faceless_as_0": 0.5146,
             "face_sim/curricularface": 0.4, "copy_paste/curricularface": 0.7, "by_k": {}},
    "no_face": {"face_sim/curricularface": 0.0, "by_k": {}},
}


def test_leaderboard_layout_and_opens2v_aggregation():
    rows = list(csv.reader(io.StringIO(leaderboard_csv(METRICS, "curricularface"))))
    assert tuple(rows[0]) == COLUMNS
    assert rows[0][:4] == ["Model", "Venue", "Evaluated by", "TotalScore↑"] and rows[0][7] == "FaceSim↑"
    by_model = {r[0]: dict(zip(COLUMNS, r)) for r in rows[1:]}
    assert by_model["ours"]["FaceSim↑"] == "51.46%"  # the faceless-as-0 mean, not our 0.62
    assert by_model["no_face"]["FaceSim↑"] == ""  # not computed: empty, never 0
    assert all(by_model["ours"][c] == "" for c in ("TotalScore↑", "Aesthetics↑", "GmeScore↑", "NexusScore↑"))


def test_face_sim_against_copy_paste_plot_and_section(tmp_path):
    png = copy_paste_plot(tmp_path / "cp.png", METRICS, "curricularface")
    img = np.asarray(Image.open(png).convert("RGB"))
    assert img.shape[0] > 100 and img.std() > 10
    assert copy_paste_plot(tmp_path / "none.png", {"no_face": METRICS["no_face"]}, "curricularface") is None
    html = "".join(comparability_section(tmp_path, METRICS, "curricularface"))
    assert "face_sim_vs_copy_paste.png" in html and (tmp_path / "opens2v_leaderboard.csv").is_file()
