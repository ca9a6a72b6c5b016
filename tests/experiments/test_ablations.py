"""The override files reach params.yaml through DVC exactly as `dvc exp run -S` writes them.

`dvc.utils.hydra.apply_overrides` is the function `dvc exp run -S` (and `--queue`) calls on
params.yaml; it rewrites the file with ruamel (YAML 1.2, `no` unquoted) on a struct config (no new key
without `+`). So these tests hold the documented commands' params step without running a stage.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from dvc.utils.hydra import apply_overrides

from experiments.ablations import exp_command, override_args
from study.params import validate_params
from ingredients.config import load_merged, load_params

ROOT = Path(__file__).resolve().parents[2]
ABLATIONS = sorted((ROOT / "experiments").glob("*.yaml"))
FULL, REHEARSAL, SMALL = (ROOT / "profiles" / f"{name}.yaml" for name in ("full", "rehearsal", "small"))


def _through_dvc(tmp_path: Path, overrides: list[Path]) -> dict:
    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    args = override_args(overrides, base=params)
    apply_overrides(params, [a for a in args if a != "-S"])
    return load_params(params)


@pytest.mark.parametrize("override", ABLATIONS, ids=lambda p: p.stem)
def test_every_ablation_survives_dvc_and_reads_as_merged(tmp_path, override):
    written = _through_dvc(tmp_path, [override])
    assert written == load_merged(ROOT / "params.yaml", (override,))
    validate_params(written)
    # DVC writes `mixed_precision: no` unquoted: YAML 1.1 would read it as false
    assert "mixed_precision: no\n" in (tmp_path / "params.yaml").read_text()
    assert written["train"]["common"]["mixed_precision"] == "no"


@pytest.mark.parametrize("files", [[FULL], [FULL, REHEARSAL], [SMALL]], ids=["full", "full+rehearsal", "small"])
def test_the_real_study_profiles_survive_dvc(tmp_path, files):
    """README's real-study command: profiles whose keys params.yaml lacks (prepare.full, faces.model_dir,
    sample.height) are added with `+`, the others changed in place."""
    written = _through_dvc(tmp_path, files)
    assert written == load_merged(ROOT / "params.yaml", tuple(files))
    validate_params(written)


def test_absent_keys_are_added_with_plus_present_ones_changed(tmp_path):
    args = override_args([ROOT / "experiments" / "injection_every_2.yaml"])
    assert args == ["-S", "+prepare.transformer.cross_attn_interval=2"]
    assert override_args([ROOT / "experiments" / "no_routing_loss.yaml"]) == ["-S", "train.stage2.routing.weight=0.0"]
    cmd = exp_command([FULL, REHEARSAL], queue=False)
    assert cmd[:5] == ["dvc", "exp", "run", "-n", "full+rehearsal"]
    assert "+prepare.full.backbone=\"weights_rehearsal/CogVideoX-5b-I2V\"" in cmd
    assert "train.common.mixed_precision=\"no\"" in cmd



def test_experiment_command_names_the_run_and_the_keys():
    cmd = exp_command(ROOT / "experiments" / "no_routing_loss.yaml", queue=True)
    assert cmd[:5] == ["dvc", "exp", "run", "--queue", "-n"] and cmd[5] == "no_routing_loss"
    assert cmd[6:] == ["-S", "train.stage2.routing.weight=0.0"]


def test_queue_skips_an_experiment_that_already_exists(monkeypatch, caplog):
    """Running the documented queue command again queues only what DVC does not hold yet (DVC refuses a
    name twice), and says which it kept and how to rerun it."""
    import experiments.ablations as ablations

    queued = []
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(ablations, "existing_experiments", lambda: {"box_masks", "an_unrelated_one"})
    monkeypatch.setattr(ablations.subprocess, "run", lambda cmd, **kw: queued.append(cmd))
    with caplog.at_level("WARNING", logger="experiments.ablations"):
        ablations.main(["queue", "experiments/box_masks.yaml", "experiments/no_routing_loss.yaml"])
    assert [cmd[5] for cmd in queued] == ["no_routing_loss"]
    assert "experiment 'box_masks' already exists" in caplog.text and "dvc exp remove box_masks" in caplog.text
    assert "an_unrelated_one" not in caplog.text
