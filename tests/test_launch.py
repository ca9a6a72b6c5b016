"""The launch layer (ingredients/launch.py): the command DVC runs for each GPU stage, read from
dvc.yaml as DVC renders it with a profile's params; the local engine; the pre-flight refusal.
The multi-process and Ray Train runs are in tests/test_launch_processes.py (slow)."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import pytest
import yaml

from ingredients import launch
from ingredients.config import ParamsError, load_merged, validate_model
from ingredients.launch_params import LaunchParams, StageLaunch

ROOT = Path(__file__).resolve().parents[1]


def rendered_commands(project: Path, overrides: tuple[Path, ...]) -> dict[str, str]:
    """{stage: cmd} of dvc.yaml as DVC renders it (templating resolved) with params.yaml + `overrides`
    merged into the project's params.yaml; configs/ is copied so the launcher can read its config."""
    from dvc.repo import Repo

    shutil.copy(ROOT / "dvc.yaml", project / "dvc.yaml")
    shutil.copytree(ROOT / "configs", project / "configs")
    (project / "params.yaml").write_text(yaml.safe_dump(load_merged(ROOT / "params.yaml", overrides), sort_keys=False))
    (project / ".dvc").mkdir()  # what `dvc init --no-scm` writes, without DVC's logging setup
    (project / ".dvc" / "config").write_text("[core]\n    no_scm = True\n")
    with Repo(str(project)) as repo:
        return {stage.name: stage.cmd for stage in repo.index.stages}


def launcher_argv(cmd: str) -> list[str]:
    """The arguments after `python -m ingredients.launch` in the first command of a stage's cmd."""
    words = shlex.split(cmd.split("&&")[0])
    assert words[:3] == ["python", "-m", "ingredients.launch"], cmd
    return words[3:]


def test_full_profile_launches_eight_gpus_with_multi_gpu_ddp(tmp_path, monkeypatch, capsys):
    cmds = rendered_commands(tmp_path, (ROOT / "profiles" / "full.yaml",))
    monkeypatch.chdir(tmp_path)
    for stage, module in (("train_stage1", "ingredients.training.train"), ("train_stage2", "ingredients.training.train"),
                          ("sample", "ingredients.sampling.sample")):
        argv = launcher_argv(cmds[stage])
        launch.main([*argv[:argv.index("-m")], "--dry-run", *argv[argv.index("-m"):]])
        run = shlex.split(capsys.readouterr().out.strip())
        assert run[1:] == ["-m", "accelerate.commands.launch", "--config_file", "configs/accelerate/multi_gpu_ddp.yaml",
                           "--num_processes", "8", "-m", module, *argv[argv.index("-m") + 2:]], stage
    # the training stages resume from their own checkpoints when the launch restarts them
    assert cmds["train_stage2"].endswith("--out models/stage2 --resume auto")


def test_tiny_profile_is_one_local_process(tmp_path):
    cmds = rendered_commands(tmp_path, ())
    for stage in ("train_stage1", "train_stage2", "sample"):
        argv = launcher_argv(cmds[stage])
        assert argv[argv.index("--engine") + 1] == "local" and argv[argv.index("--num-processes") + 1] == "1"


def test_rehearsal_profile_runs_two_cpu_processes(tmp_path):
    cmds = rendered_commands(tmp_path, (ROOT / "profiles" / "full.yaml", ROOT / "profiles" / "rehearsal.yaml"))
    for stage in ("train_stage1", "train_stage2", "sample"):
        argv = launcher_argv(cmds[stage])
        assert argv[argv.index("--accelerate-config") + 1] == "configs/accelerate/cpu_ddp.yaml"
        assert argv[argv.index("--num-processes") + 1] == "2"


def test_local_engine_runs_the_module_in_this_process(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    params = tmp_path / "params.yaml"
    params.write_text("launch: {}\n")
    source, target = tmp_path / "in.json", tmp_path / "out.json"
    source.write_text('{"b": 1, "a": [2]}')
    launch.main(["--params", str(params), "--stage", "sample", "-m", "json.tool", "--sort-keys", str(source), str(target)])
    assert json.loads(target.read_text()) == {"a": [2], "b": 1}
    assert target.read_text().startswith('{\n    "a"')  # --sort-keys reached the module


def test_bad_launch_names_the_key():
    with pytest.raises(ParamsError, match=r"launch\.train.*engine 'local'"):
        validate_model(LaunchParams, {"train": {"engine": "local", "num_processes": 2}}, "launch")
    with pytest.raises(ParamsError, match=r"launch\.sample\.engine"):
        validate_model(LaunchParams, {"sample": {"engine": "slurm"}}, "launch")
    with pytest.raises(ParamsError, match="no such file"):
        validate_model(StageLaunch, {"engine": "accelerate", "accelerate_config": "configs/accelerate/nope.yaml"},
                       "launch.train")
    with pytest.raises(SystemExit, match="-m MODULE"):
        launch.main(["--params", "params.yaml", "--stage", "sample"])


def test_preflight_refuses_a_launch_that_does_not_fit(tmp_path, monkeypatch, caplog):
    """The tiny model's stage 2 on one process plans about 0.65 GiB per device with the allowance: a
    0.05 GiB device refuses before the module starts, naming the plan's fixes (a launch that fits
    passes its planned peak to the trainer: tests/test_launch_processes.py reads it from MLflow)."""
    monkeypatch.chdir(ROOT)
    params = load_merged(ROOT / "params.yaml")
    params["launch"]["device_memory_gib"] = 0.05
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    argv = ["--params", str(params_file), "--stage", "train_stage2", "-m", "json.tool", str(tmp_path / "never.json")]
    with pytest.raises(SystemExit) as refused:
        launch.main(argv)
    message = str(refused.value)
    assert "pre-flight of train_stage2" in message and "0.05 GiB" in message
    assert "would fit with: train.*.precompute.enabled: true" in message  # the plan's own fix
    assert not (tmp_path / "never.json").exists()

