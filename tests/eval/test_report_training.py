"""The report's training section: loss curves from train_log.csv files and validation images."""

from __future__ import annotations

import numpy as np
from PIL import Image

from eval.report import training_section


def test_training_section_plots_losses_and_copies_validation_images(tmp_path):
    log = tmp_path / "train_log.csv"
    log.write_text("step,loss,diffusion_loss,routing_loss,lr\n1,2.0,1.5,0.5,0.001\n2,1.5,1.2,0.3,0.001\n")
    val = tmp_path / "stage2" / "validation"
    val.mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(val / "step-00000002_routing.png")
    out = tmp_path / "report"
    out.mkdir()
    html = "\n".join(training_section(out, {"stage2": log, "absent": tmp_path / "nope.csv"}, [val / "step-00000002_routing.png"]))
    assert "training_losses.png" in html and (out / "training_losses.png").stat().st_size > 1000
    assert (out / "train_stage2_step-00000002_routing.png").is_file() and "routing" in html
