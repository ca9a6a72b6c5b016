"""Every command the README and the docs show is run verbatim by a test, or listed here with why not.

A documented command is a line of a fenced `bash` block (continuations joined, comments dropped) in
README.md, docs/*.md and the READMEs of the packages and configs, or inline code that starts with a
command (`python -m ...`, `dvc ...`, `hf ...`, ...) and has arguments. Each must be one of:
- **run verbatim**: the command's text (whitespace collapsed) appears in a test file or in `.ci/run`;
  a test that runs it fills its placeholders (a.jpg, B, N) by `str.replace` on that very text;
- **needs a GPU, the network or a second machine** (`ELSEWHERE`): its program's `--help` runs here, the
  syntax check the suite can afford;
- **a long measurement** (`MEASUREMENTS`): the docs report its output; its test-sized form runs in the
  named test, and its program's `--help` here;
- **not a command** (`NOT_COMMANDS`): inline code that names a synopsis, a pitfall or what a tool runs.
So a new command in the docs fails this test until it is run or classified.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROGRAMS = ("python ", "dvc ", "hf ", "ingredients ", "accelerate ", "bash ", "mlflow ", "ray ", "OMP_NUM_THREADS=",
            "git ", "pytest ", "source ")

ELSEWHERE = {  # command: why it cannot run here
    "hf download THUDM/CogVideoX-5b-I2V --local-dir weights/CogVideoX-5b-I2V": "downloads 22 GB",
    "hf download DIAMONIK7777/antelopev2 --local-dir weights/face_encoder/models/antelopev2": "downloads",
    "hf download QuanSun/EVA-CLIP EVA02_CLIP_L_336_psz14_s6B.pt --local-dir weights/face_encoder": "downloads",
    "hf download BestWishYsh/ConsisID-preview face_encoder/glint360k_curricular_face_r101_backbone.bin --local-dir weights/curricularface": "downloads",
    "hf download laion/CLIP-ViT-L-14-laion2B-s32B-b82K open_clip_pytorch_model.bin --local-dir weights/open_clip/ViT-L-14": "downloads",
    "hf download --repo-type dataset BestWishYsh/OpenS2V-Eval --local-dir data/OpenS2V-Eval": "downloads",
    "python -m experiments.ablations run profiles/full.yaml my_study.yaml": "a GPU and the real weights (the rehearsal form runs in tests/e2e/test_full_rehearsal.py)",
    "ingredients generate --photo a.jpg --photo b.jpg --prompt \"two people talking in a park\" --out video.mp4 --model path/to/full/model --steps 50 --guidance 6 --seed 0 --frames 49 --height 480 --width 720": "a full-size model on a GPU",
    "accelerate launch --config_file configs/accelerate/multi_gpu_ddp.yaml -m ingredients.sampling.sample --params params.yaml --benchmark data/benchmark/benchmark.jsonl --model models/stage2/model --out outputs/samples": "GPUs",
    "accelerate launch --multi_gpu --num_processes 8 -m ingredients.sampling.sample ...": "8 GPUs",
    "dvc exp run -S compute.engine=ray -S compute.address=auto -S launch.train.engine=ray -S launch.train.num_processes=32 -S launch.sample.engine=ray -S launch.sample.num_processes=32 -S launch.ray.use_gpu=true":
        "a Ray cluster of 32 GPUs (its CPU form, 2 Ray Train workers, runs in tests/e2e/test_launch_experiment.py)",
    "ray start --address=HEAD_IP:6379 --num-cpus=32 --num-gpus=0": "a second machine (the head node's side runs in tests/e2e/test_ablation_queue.py)",
    "python -m instruments.speed.sampling_speed --size full --device cuda --steps 50 --out speed_full.json": "a GPU",
    "python -m instruments.speed.sampling_speed --size full --device cuda --models ours --steps 50 --extrapolate-from 10 --sweep identity_sdpa,fused_injection,id_tokens --out speed_full_sweep.json": "a GPU",
    "python -m instruments.speed.sampling_speed --size full --device cuda --models ours --steps 50 --extrapolate-from 10 --sweep compile --out speed_full_compile.json": "a GPU",
    "python -m instruments.speed.sampling_speed --size full --device cuda --models ours --steps 50 --sweep step_cache --cache-threshold 0.05 --out speed_full_cache.json": "a GPU",
    "python -m instruments.speed.sampling_speed --mode quality --pipeline-folder MODEL_DIR --device cuda --steps 50 --step-cache first_block --cache-threshold 0.05 --out quality_fbc.json": "a GPU and a full-size model",
    "python -m instruments.speed.sampling_speed --mode pipeline --pipeline-folder MODEL_DIR --device cuda --steps 50 --out pipe_plain.json": "a GPU and a full-size model",
    "bash scripts/device_check.sh --plan outputs/plan/full.json": "a GPU (its rehearsal form runs in tests/instruments/speed/test_device_check.py)",
    "python -m eval.opens2v --root OpenS2V-Eval --out bench.jsonl": "the OpenS2V-Eval download (its layout is tested on a fixture in tests/eval/test_opens2v.py)",
}

MEASUREMENTS = {  # command: the test that runs its test-sized form
    "python -m instruments.speed.identity_cost identity-cost --size reduced --rounds 7 --compile --out compile.json": "tests/models/test_transformer.py (fullgraph compile, eager and inductor)",
    "python -m instruments.speed.identity_cost identity-cost --size full --rounds 5": "tests/instruments/speed/test_identity_cost.py (slow, same size)",
    "python -m instruments.speed.identity_cost identity-cost --size full --rounds 3 --out identity_cost.json": "tests/instruments/speed/test_identity_cost.py",
    "python -m instruments.speed.sampling_speed --size reduced --device cpu --steps 50 --sweep identity_sdpa,fused_injection,id_tokens,step_cache --out reduced.json": "tests/instruments/speed/",
    "python -m instruments.speed.sampling_speed --mode quality --steps S --step-cache SIGNAL --cache-threshold T": "tests/instruments/speed/test_step_cache.py",
    "python -m ingredients.data.synth --out raw && python -m ingredients.data.curate --raw raw --out cur": "tests/data/test_curate.py",
    "python -m ingredients.training.train --params params.yaml --stage stage1 --manifest data/curated/manifest.jsonl --init models/base --out models/stage1": "tests/training/test_train_tiny.py",
    "python -m instruments.bench_compute": "tests/test_compute.py",
    "python -m instruments.curation_footprint --width 3840 --height 2160 --seconds 3 --work runs/footprint": "tests/instruments/test_curation_footprint.py (slow, 384x216 for 2 s)",
    "python -m instruments.load_measurement --videos 200 --out runs/load": "tests/instruments/test_load_measurement.py",
    "python -m pytest tests/instruments/test_load_measurement.py -m slow -q -p no:cacheprovider --basetemp=/tmp/lt_slow": "itself (slow)",
    "accelerate launch --config_file configs/accelerate/cpu_ddp.yaml -m ingredients.training.train --params params.yaml --stage stage2 --manifest data/curated/manifest.jsonl --val-manifest data/curated_heldout/manifest.jsonl --init models/stage1/model --out models/stage2_ddp": "tests/training/test_ddp.py (slow)",
    "OMP_NUM_THREADS=1 accelerate launch --config_file configs/accelerate/cpu_ddp.yaml -m ingredients.sampling.sample ...": "tests/sampling/test_sample_processes.py (slow)",
    "ingredients plan --params params.yaml profiles/full.yaml": "tests/plan/test_plan_cli.py (slow: the full profile's plan, minutes of fake steps)",
    "ingredients plan --params params.yaml profiles/full.yaml configs/plan/<file>.yaml --backbone-only --stage sample": "tests/plan/test_plan_cli.py (the calibration files, at full size: minutes)",
    "git clone … && bash scripts/setup.sh && dvc repro": "how the fresh-clone time was taken; tests/e2e/test_readme_commands.py runs the README's first command",
}

NOT_COMMANDS = {  # inline code that is not a command to run
    "python -m experiments.ablations run FILE [FILE ...]": "the synopsis",
    "python -m study.params params.yaml [override ...]": "the synopsis",
    "ingredients plan --params params.yaml profiles/full.yaml [override.yaml ...] [--gpus N] [--gpu-memory-gib G] [--mfu M] [--backbone-only] [--stage train_stage1|train_stage2|sample ...] [--json outputs/plan/plan.json]": "the synopsis",
    "dvc exp run -n <file stem> -S key=value ...": "what experiments.ablations generates",
    "dvc exp run --run-all": "what `queue --run` runs",
    "accelerate launch --cpu --num_processes 2": "the pitfall the docs warn against",
    "accelerate launch --config_file <x>.yaml --num_processes N -m ...": "what the launcher runs (tests/test_launch.py reads it)",
    "accelerate launch --config_file configs/accelerate/multi_gpu_ddp.yaml --num_processes 8 -m ingredients.training.train ...":
        "what the full profile's launch runs on 8 GPUs (tests/test_launch.py renders it from dvc.yaml)",
    "ray symmetric-run": "a Ray feature the docs mention",
    "python -m ingredients.training.train": "a module name",
    "python -m instruments.speed.sampling_speed": "a module name",
    "python -m eval.run": "a module name",
    "dvc exp run -S sample.steps=N": "the measured pattern (tests/e2e/test_pipeline.py runs it with N filled)",
}


def documented_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted(ROOT.glob("*/README.md")),
            *sorted(ROOT.glob("*/*/README.md"))]


def _norm(text: str) -> str:
    return " ".join(text.split())


def documented_commands(path: Path) -> list[str]:
    """The commands of one Markdown file (see the module docstring)."""
    text = path.read_text(encoding="utf-8")
    out = []
    for block in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", text, re.S):
        if block.startswith("#!"):  # a whole script (a Slurm job): checked by `bash -n` below
            continue
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()
            if line and not line.startswith("#"):
                out.append(_norm(line))
    prose = re.sub(r"```.*?```", "", text, flags=re.S).replace("\n", " ")
    out += [_norm(span) for span in re.findall(r"`([^`]+)`", prose) if span.startswith(PROGRAMS) and " " in span.strip()]
    return out


def scripts(path: Path) -> list[str]:
    return [b for b in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", path.read_text(encoding="utf-8"), re.S) if b.startswith("#!")]


def _tested_text() -> str:
    files = [*(ROOT / "tests").rglob("*.py"), ROOT / ".ci" / "run"]
    return "\n".join(_norm(p.read_text(encoding="utf-8")) for p in files if p != Path(__file__).resolve())


ALL = sorted({(str(p.relative_to(ROOT)), c) for p in documented_files() for c in documented_commands(p)})


def test_the_extractor_finds_the_readme_commands():
    commands = {c for p, c in ALL if p == "README.md"}
    assert "bash scripts/setup.sh && source .venv/bin/activate && dvc repro" in commands
    assert "python -m experiments.ablations queue experiments/*.yaml --run" in commands
    assert "hf download THUDM/CogVideoX-5b-I2V --local-dir weights/CogVideoX-5b-I2V" in commands  # inline, in a table


def test_every_documented_command_is_run_verbatim_or_classified():
    tested = _tested_text()
    unaccounted = [f"{path}: {cmd}" for path, cmd in ALL
                   if cmd not in tested and cmd not in ELSEWHERE and cmd not in MEASUREMENTS and cmd not in NOT_COMMANDS]
    assert not unaccounted, "documented commands no test runs verbatim:\n  " + "\n  ".join(unaccounted)


def test_the_classification_lists_hold_only_documented_commands():
    documented = {c for _, c in ALL}
    stale = sorted((set(ELSEWHERE) | set(MEASUREMENTS) | set(NOT_COMMANDS)) - documented)
    assert not stale, f"listed here but no longer in the docs: {stale}"


def _words(command: str) -> list[str]:
    """The first command of a line, without VAR=value prefixes and redirections."""
    words = shlex.split(command.split(" && ")[0].split(" > ")[0])
    return [w for w in words if "=" not in w or w.startswith("-")]


def _programs(commands) -> dict[str, list[str]]:
    """{program: its documented arguments, first occurrence} for the commands that cannot run here."""
    out: dict[str, list[str]] = {}
    for command in commands:
        words = _words(command)
        key = " ".join(words[:3] if words[:2] == ["python", "-m"] else words[:2])
        out.setdefault(key, words)
    return out


SYNTAX = _programs(c for c in [*ELSEWHERE, *MEASUREMENTS] if not c.startswith(("git ", "python -m pytest")))


@pytest.mark.parametrize("program", sorted(SYNTAX))
def test_commands_that_cannot_run_here_pass_their_programs_syntax_check(program, capsys, monkeypatch):
    """In this process (one import of torch for all): a Python module's `--help`; accelerate's and
    Ray's own parsers on the documented arguments (nothing launched); `hf download --help`."""
    import runpy

    words = SYNTAX[program]
    if words[0] == "python":
        target = words[2] if words[1] == "-m" else str(ROOT / words[1])
        monkeypatch.setattr(sys, "argv", [target, "--help"])
        with pytest.raises(SystemExit) as exit_:
            if words[1] == "-m":
                runpy.run_module(target, run_name="__main__", alter_sys=True)
            else:
                runpy.run_path(target, run_name="__main__")
        assert exit_.value.code in (0, None) and "usage" in capsys.readouterr().out.lower()
    elif words[0] == "ingredients":
        from ingredients.cli import main

        with pytest.raises(SystemExit) as exit_:
            main([words[1], "--help"])
        assert exit_.value.code == 0 and "usage" in capsys.readouterr().out.lower()
    elif words[0] == "bash":  # a shell script: bash's own syntax check
        run = subprocess.run(["bash", "-n", str(ROOT / words[1])], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
    elif words[:2] == ["accelerate", "launch"]:
        from accelerate.commands.launch import launch_command_parser

        args = launch_command_parser().parse_args([w for w in words[2:] if w != "..."])
        assert args.module and args.training_script.startswith("ingredients.")
    elif words[:2] == ["ray", "start"]:
        from ray.scripts.scripts import start

        assert start.make_context("start", words[2:]).params["address"] or "--head" in words
    else:
        run = subprocess.run([str(Path(sys.executable).parent / words[0]), words[1], "--help"], capture_output=True,
                             text=True, timeout=120)
        assert run.returncode == 0 and "usage" in run.stdout.lower(), run.stderr[-2000:]


@pytest.mark.parametrize("path", [p for p in documented_files() if scripts(p)], ids=lambda p: p.name)
def test_documented_scripts_are_valid_bash(path):
    for script in scripts(path):
        assert subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True).returncode == 0


def test_the_docs_cite_test_files_that_exist():
    cited = {m for p in documented_files() for m in re.findall(r"tests/[\w/]+\.py", p.read_text(encoding="utf-8"))}
    assert cited and not [c for c in cited if not (ROOT / c).is_file()]
