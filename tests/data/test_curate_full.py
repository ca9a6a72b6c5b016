"""The full tiny raw set (14 videos, all recipes) through curation: ground truth and throughput."""

from __future__ import annotations

import json
import logging

import pytest

from ingredients.data.curate import curate
from ingredients.data.curation_params import CurationParams
from ingredients.data.synth import synthesize

logger = logging.getLogger(__name__)


@pytest.mark.slow
def test_full_tiny_curation(tmp_path):
    raw = tmp_path / "raw"
    summary = synthesize(raw, seed=0, num_videos=14)
    assert len(summary.videos) == 14
    report = curate(raw, tmp_path / "curated", CurationParams())
    gt = report["ground_truth"]
    logger.info("full tiny curation: %s; throughput %s", json.dumps(gt), json.dumps(report["throughput"]))
    assert gt["identity_accuracy"] >= 0.95
    assert gt["mask_iou"] >= 0.70
    assert gt["identity_count_accuracy"] == 1.0
    assert report["videos"]["skipped"] == {"no_faces": 1}  # the empty recipe
    # one clip per defect recipe is dropped, each for its own reason
    assert report["clips"]["dropped"] == {"briefly_visible": 1, "face_too_small": 1, "too_many_identities": 1, "too_short": 1}
    assert report["clips"]["kept"] == report["clips"]["shots"] - 4 - 1
    assert set(report["identity_histogram"]) == {"1", "2", "3"}
    assert report["throughput"]["frames_per_second"] > 1.0
