"""Every command the README and the docs show is checked by what ran: the executed-command record.

A documented command is every line of a fenced block (bash, sh, or no language: `eval/README.md`'s
commands; continuations joined, comments dropped; in a fence without a language only lines that start
with a program), and every inline code span that starts with a program (`python -m ...`, `dvc ...`,
`hf ...`, ...) and has arguments, in README.md, docs/*.md and the READMEs of the packages and configs.
Each occurrence is read (no de-duplication by program). Each must be one of:
- **run verbatim** (`RUN`: the command, the test that runs it, or `fixture:NAME` for a session
  fixture's command, run for whichever test takes the fixture first): the named test's record
  (tests/command_record.py: every command a test starts, as started) holds it, word for word, alone or
  as part of a `&&` chain; placeholders (`PLACEHOLDERS`: B, N, DIR, NAME, ...) match any word;
- **needs a GPU, the network or a second machine** (`ELSEWHERE`);
- **a long measurement** (`MEASUREMENTS`: docs/measurements.md's and the speed docs' commands, the
  test that runs its test-sized form): the named test's record holds the same form (the program, its
  subcommand and every option the docs give, values test-sized);
- **a synopsis** (`SYNOPSES`: placeholders, `[optional]` parts): checked like a measurement;
- **not a command** (`NOT_COMMANDS`): inline code that names a tool, a module or a pitfall.
Whatever is not run in the record has its documented arguments parsed by its program's real parser
(argparse of the module, accelerate's, DVC's, Ray's and hf's click commands, pytest's), nothing launched.

When each check runs. The record exists only for tests that ran. The default suite checks every entry
whose named test ran in this session (these tests run last) and parses the arguments of every
command; a new documented command in no list fails it. `.ci/run` runs the default suite, then the slow
tests that run the documented uses verbatim, into one record, then this file with
INGREDIENTS_DOCS_CHECK=full: then every `RUN` entry must be in the record of its test, except those
whose test is a slow one `.ci/run` leaves out (`OUTSIDE_CI`, with why; they are checked by the record
of any run that includes them), and every `MEASUREMENTS`/`SYNOPSES` entry naming a test that ran.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import warnings
from pathlib import Path

import pytest

from tests import command_record

ROOT = Path(__file__).resolve().parents[1]
FULL = os.environ.get("INGREDIENTS_DOCS_CHECK") == "full"
PROGRAMS = ("python ", "dvc ", "hf ", "ingredients ", "accelerate ", "bash ", "mlflow ", "ray ", "OMP_NUM_THREADS=",
            "git ", "pytest ", "source ")
PLACEHOLDERS = {  # a placeholder of the docs: what it stands for when the arguments are parsed
    "MODEL_DIR": "model", "HEAD_IP": "10.0.0.1", "SIGNAL": "first_block", "NAME": "name", "FILE": "file.yaml",
    "DIR": "out", "B": "bench.jsonl", "N": "2", "I": "0", "S": "4", "T": "0.05", "G": "80", "M": "0.4",
}
README_TEST = "tests/e2e/test_readme_commands.py"
REHEARSAL_TEST = "tests/e2e/test_full_rehearsal.py"
QUEUE_TEST = "tests/e2e/test_ablation_queue.py"  # all nine ablations (slow, about an hour; not in .ci/run)
LAUNCH_TEST = "tests/e2e/test_launch_experiment.py"  # docs/scaling.md's launch experiments (slow)
LAUNCH_ACCELERATE = ("OMP_NUM_THREADS=1 dvc exp run -S launch.train.engine=accelerate -S launch.train.accelerate_config=configs/accelerate/cpu_ddp.yaml "
                     "-S launch.train.num_processes=2 -S launch.sample.engine=accelerate -S launch.sample.accelerate_config=configs/accelerate/cpu_ddp.yaml "
                     "-S launch.sample.num_processes=2")
LAUNCH_RAY = "OMP_NUM_THREADS=1 dvc exp run -S launch.train.engine=ray -S launch.train.num_processes=2 -S launch.sample.engine=ray -S launch.sample.num_processes=2"
MLFLOW_UI_TEST = "tests/study/test_mlflow_ui_browser.py"  # the MLflow UI in a browser on two ablations (slow)
CI_ABLATION = f"{README_TEST}::test_one_retraining_ablation_by_the_queue_command_then_the_comparison"

RUN = {  # command: the test that runs it verbatim (file, or file::test)
    "bash scripts/setup.sh && source .venv/bin/activate && dvc repro": "fixture:readme_project",  # tests/conftest.py
    "bash scripts/setup.sh && source .venv/bin/activate": README_TEST,
    "source .venv/bin/activate": README_TEST,
    "bash scripts/setup.sh && .venv/bin/python -m pytest -n 2 --dist loadfile": ".ci/run",
    "ingredients generate --photo a.jpg --photo b.jpg --prompt \"two people talking in a park\" --out video.mp4 --model models/stage2/model": README_TEST,
    "ingredients generate --from-json video.json --out again.mp4": README_TEST,
    "dvc metrics show": README_TEST,
    "dvc plots show": README_TEST,
    "python -m instruments.photo_cases --out DIR": README_TEST,
    "python -m study.params params.yaml profiles/full.yaml my_study.yaml > /dev/null": REHEARSAL_TEST,
    "python -m instruments.rehearsal --out weights_rehearsal": REHEARSAL_TEST,
    "python -m study.params params.yaml profiles/full.yaml profiles/rehearsal.yaml my_study.yaml > /dev/null": REHEARSAL_TEST,
    "python -m experiments.ablations run profiles/full.yaml profiles/rehearsal.yaml my_study.yaml": REHEARSAL_TEST,
    "python -m experiments.ablations queue experiments/*.yaml --run": CI_ABLATION,
    "dvc exp show --only-changed": CI_ABLATION,
    "dvc exp show --only-changed && python -m study.mlflow_stage ui": CI_ABLATION,
    "python -m study.mlflow_stage ui": CI_ABLATION,
    "dvc exp show --only-changed --md": CI_ABLATION,
    "dvc queue logs NAME": f"{QUEUE_TEST}::test_a_failing_experiment_makes_the_queue_command_fail_naming_it",
    "python -m experiments.ablations run experiments/no_routing_loss.yaml": f"{QUEUE_TEST}::test_one_ablation_retrains_from_the_workspace",
    "ray start --head --port=6379 --num-cpus=32 --num-gpus=0 --temp-dir=/tmp/ray_$USER": f"{QUEUE_TEST}::test_curation_and_evaluation_join_a_ray_cluster_by_the_scaling_docs_commands",
    "dvc exp run -S compute.engine=ray -S compute.address=auto": f"{QUEUE_TEST}::test_curation_and_evaluation_join_a_ray_cluster_by_the_scaling_docs_commands",
    "ray stop": f"{QUEUE_TEST}::test_curation_and_evaluation_join_a_ray_cluster_by_the_scaling_docs_commands",
    "dvc repro": "fixture:readme_project",  # tests/conftest.py: the session's one run of the README's first command
    "bash scripts/device_check.sh --size rehearsal": "tests/instruments/speed/test_device_check.py",
    LAUNCH_ACCELERATE: LAUNCH_TEST,
    LAUNCH_RAY: LAUNCH_TEST,
    "OMP_NUM_THREADS=1 dvc repro": LAUNCH_TEST,
    "python -m experiments.ablations queue experiments/no_routing_loss.yaml experiments/mse_routing_loss.yaml --run": MLFLOW_UI_TEST,
}

OUTSIDE_CI = {  # slow tests .ci/run does not run (it runs the uses within 25 minutes): why
    "tests/instruments/speed/test_device_check.py": "a measurement (slow, about 2 minutes): the device check at rehearsal size against its plan",
    LAUNCH_TEST: "a one-process dvc repro and two multi-process experiments of three stages (about 30 minutes)",
    MLFLOW_UI_TEST: "a dvc repro, two queued ablations and a browser (about 45 minutes loaded)",
    f"{QUEUE_TEST}::test_a_failing_experiment_makes_the_queue_command_fail_naming_it": "a failing experiment after the nine",
    f"{QUEUE_TEST}::test_one_ablation_retrains_from_the_workspace": "a second retraining ablation (the queue's one retrains in .ci/run)",
    f"{QUEUE_TEST}::test_curation_and_evaluation_join_a_ray_cluster_by_the_scaling_docs_commands": "a Ray cluster and a rerun of curation and evaluation",
}

ELSEWHERE = {  # command: why it cannot run here
    "hf download THUDM/CogVideoX-5b-I2V --local-dir weights/CogVideoX-5b-I2V": "downloads 22 GB",
    "hf download DIAMONIK7777/antelopev2 --local-dir weights/face_encoder/models/antelopev2": "downloads",
    "hf download QuanSun/EVA-CLIP EVA02_CLIP_L_336_psz14_s6B.pt --local-dir weights/face_encoder": "downloads",
    "hf download BestWishYsh/ConsisID-preview face_encoder/glint360k_curricular_face_r101_backbone.bin --local-dir weights/curricularface": "downloads",
    "hf download laion/CLIP-ViT-L-14-laion2B-s32B-b82K open_clip_pytorch_model.bin --local-dir weights/open_clip/ViT-L-14": "downloads",
    "hf download --repo-type dataset BestWishYsh/OpenS2V-Eval --local-dir data/OpenS2V-Eval": "downloads",
    "python -m experiments.ablations run profiles/full.yaml my_study.yaml": "a GPU and the real weights (the rehearsal form runs in tests/e2e/test_full_rehearsal.py)",
    "python -m experiments.ablations run profiles/full.yaml": "a GPU and the real weights",
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

MEASUREMENTS = {  # command: the test that runs its test-sized form (same program, subcommand and options);
    # for a `pytest` command, the test it selects
    "python -m instruments.speed.identity_cost identity-cost --size reduced --rounds 7 --compile --out compile.json": "tests/instruments/speed/test_identity_cost.py::test_the_documented_compile_measurement_cli",
    "python -m instruments.speed.identity_cost identity-cost --size full --rounds 5": "tests/instruments/speed/test_identity_cost.py",
    "python -m instruments.speed.identity_cost identity-cost --size full --rounds 3 --out identity_cost.json": "tests/instruments/speed/test_identity_cost.py",
    "python -m instruments.speed.sampling_speed --size reduced --device cpu --steps 50 --sweep identity_sdpa,fused_injection,id_tokens,step_cache --out reduced.json": "tests/instruments/speed/test_bench_sampling.py",
    "python -m instruments.speed.sampling_speed --mode quality --steps S --step-cache SIGNAL --cache-threshold T": "tests/instruments/speed/test_quality.py",
    "python -m ingredients.data.synth --out raw && python -m ingredients.data.curate --raw raw --out cur": "tests/data/test_synth_curate_cli.py",
    "python -m ingredients.training.train --params params.yaml --stage stage1 --manifest data/curated/manifest.jsonl --init models/base --out models/stage1": "tests/training/test_resume.py",
    "python -m instruments.bench_compute": "tests/instruments/test_bench_compute.py",
    "python -m instruments.load_measurement --videos 200 --out runs/load": "tests/instruments/test_load_measurement.py::test_200_videos_bounded_memory_and_four_shards_equal",
    "python -m pytest tests/instruments/test_load_measurement.py -m slow -q -p no:cacheprovider --basetemp=/tmp/lt_slow": "tests/instruments/test_load_measurement.py::test_200_videos_bounded_memory_and_four_shards_equal",
    "pytest tests/instruments/speed/test_identity_cost.py -m slow -k ratio -s": "tests/instruments/speed/test_identity_cost.py::test_identity_cost_ratio_full_width",
    "pytest tests/instruments/speed/test_faces_speed.py --benchmark-enable": "tests/instruments/speed/test_faces_speed.py",
    "pytest tests/eval/test_throughput.py -m \"slow and benchmark\" --benchmark-enable": "tests/eval/test_throughput.py::test_dlib_face_metrics_seconds_per_video",
    "accelerate launch --config_file configs/accelerate/cpu_ddp.yaml -m ingredients.training.train --params params.yaml --stage stage2 --manifest data/curated/manifest.jsonl --val-manifest data/curated_heldout/manifest.jsonl --init models/stage1/model --out models/stage2_ddp": "tests/training/test_ddp.py",
    "OMP_NUM_THREADS=1 accelerate launch --config_file configs/accelerate/cpu_ddp.yaml -m ingredients.sampling.sample ...": "tests/sampling/test_sample_processes.py",
    "ingredients plan --params params.yaml profiles/full.yaml": "tests/plan/test_plan_cli.py::test_ingredients_plan_command_writes_the_same_schema",
    "ingredients plan --params params.yaml profiles/full.yaml configs/plan/<file>.yaml --backbone-only --stage sample": "tests/plan/test_plan_calibration_cli.py",
    "python -m instruments.curation_footprint --width 3840 --height 2160 --seconds 3 --work runs/footprint": "tests/instruments/test_curation_footprint.py",
}

SYNOPSES = {  # a synopsis (placeholders, [optional] parts): the test that runs its form
    "python -m eval.baselines oracle --benchmark B --out runs/oracle [--params params.yaml]": "fixture:readme_project",  # its dvc.yaml stage
    "python -m eval.baselines no_face --benchmark B --out runs/no_face": "tests/eval/test_eval_clis.py",
    "python -m eval.baselines target_oracle --benchmark B --out runs/target_oracle": "tests/eval/test_eval_clis.py",
    "python -m eval.vae_roundtrip --benchmark B --model models/stage2/model --out runs/vae_roundtrip [--params params.yaml]": "fixture:readme_project",  # its dvc.yaml stage
    "python -m eval.run --benchmark B --method oracle=runs/oracle --method no_face=runs/no_face --out runs/eval [--params params.yaml] [--shard I/N]": "fixture:readme_project",  # its dvc.yaml stage
    "python -m eval.merge --runs runs/eval_s0 runs/eval_s1 --out runs/eval": "tests/eval/test_eval_clis.py",
    "python -m eval.report --eval runs/eval [--profile tiny|full]": "fixture:readme_project",  # its dvc.yaml stage
    "ingredients plan --params params.yaml profiles/full.yaml [override.yaml ...] [--gpus N] [--gpu-memory-gib G] [--mfu M] [--backbone-only] [--stage train_stage1|train_stage2|sample ...] [--json outputs/plan/plan.json]": "tests/plan/test_plan_cli.py::test_ingredients_plan_command_writes_the_same_schema",
}

NOT_COMMANDS = {  # inline code that is not a command to run
    "python -m experiments.ablations run FILE [FILE ...]": "the synopsis of the run subcommand (its forms run in RUN)",
    "python -m study.params params.yaml [override ...]": "the synopsis (its forms run in RUN)",
    "dvc exp run -n <file stem> -S key=value ...": "what experiments.ablations generates",
    "dvc exp run --run-all": "what `queue --run` runs",
    "accelerate launch --cpu --num_processes 2": "the pitfall the docs warn against",
    "accelerate launch --config_file <x>.yaml --num_processes N -m ...": "what the launcher runs (tests/test_launch.py reads it)",
    "accelerate launch --config_file configs/accelerate/multi_gpu_ddp.yaml --num_processes 8 -m ingredients.training.train ...":
        "what the full profile's launch runs on 8 GPUs (tests/test_launch.py renders it from dvc.yaml)",
    "ray symmetric-run": "a Ray feature the docs mention",
    "ray start": "names the command (its documented forms are in the fences)",
    "ray start --head": "names the command (its documented form runs in RUN)",
    "dvc exp show": "names the tool (its documented form `dvc exp show --only-changed` runs)",
    "python -m": "how DVC runs the stages",
    "python -m ingredients.training.train": "a module name",
    "python -m ingredients.sampling.sample": "a module name",
    "python -m instruments.speed.sampling_speed": "a module name",
    "python -m instruments.rehearsal": "a module name",
    "python -m instruments.photo_cases": "a module name",
    "python -m experiments.ablations": "a module name",
    "python -m tests.test_dvc_deps": "the test module's rewriter, which tests/test_dvc_deps.py checks the result of",
    "python -m eval.run": "a module name",
    "python -m ingredients.launch": "a module name (dvc.yaml's GPU stages run it)",
    "accelerate launch": "names the command (its documented forms are in the fences)",
    "ingredients plan": "the command's name",
    "dvc exp run": "names the command",
    "ingredients generate": "the command's name",
    "dvc exp run -S sample.steps=N": "the measured pattern (tests/e2e/test_pipeline.py runs it with a name and N filled)",
    "git clone … && bash scripts/setup.sh && dvc repro": "how the fresh-clone time was taken (the README's first command runs in RUN)",
}

CLASSES = {"RUN": RUN, "ELSEWHERE": ELSEWHERE, "MEASUREMENTS": MEASUREMENTS, "SYNOPSES": SYNOPSES,
           "NOT_COMMANDS": NOT_COMMANDS}


# ------------------------------------------------------------------ reading the docs

def documented_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted(ROOT.glob("*/README.md")),
            *sorted(ROOT.glob("*/*/README.md"))]


def _norm(text: str) -> str:
    return " ".join(text.split())


FENCE = re.compile(r"^( *)```([\w+-]*)[^\n]*\n(.*?)^\1```", re.S | re.M)
SHELL_FENCES = ("bash", "sh", "shell", "console")


def documented_commands(path: Path) -> list[str]:
    """The commands of one Markdown file, every occurrence (see the module docstring)."""
    text = path.read_text(encoding="utf-8")
    out = []
    for _, lang, block in FENCE.findall(text):
        if lang not in ("", *SHELL_FENCES) or block.startswith("#!"):  # a whole script: `bash -n` below
            continue
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = re.sub(r"(^|\s)#(\s.*)?$", "", line).strip()
            if line and (lang or line.startswith(PROGRAMS)):
                out.append(_norm(line))
    prose = FENCE.sub("", text).replace("\n", " ")
    out += [_norm(span) for span in re.findall(r"`([^`]+)`", prose) if span.startswith(PROGRAMS) and " " in span.strip()]
    return out


def scripts(path: Path) -> list[str]:
    return [b for lang, b in ((m[1], m[2]) for m in FENCE.findall(path.read_text(encoding="utf-8")))
            if lang in SHELL_FENCES and b.startswith("#!")]


ALL = [(str(p.relative_to(ROOT)), c) for p in documented_files() for c in documented_commands(p)]


def _class(command: str) -> str | None:
    return next((name for name, table in CLASSES.items() if command in table), None)


# ------------------------------------------------------------------ matching the record

def _segments(words: list[str]) -> list[list[str]]:
    out: list[list[str]] = [[]]
    for w in words:
        if w in ("&&", "||", ";", "|"):
            out.append([])
        else:
            out[-1].append(w)
    return [s for s in out if s]


def _word_pattern(word: str) -> re.Pattern:
    pattern = re.escape(word)
    for name in sorted(PLACEHOLDERS, key=len, reverse=True):
        pattern = re.sub(rf"\b{name}\b", ".+", pattern)
    return re.compile(pattern + r"\Z")


def _words_match(documented: list[str], ran: list[str]) -> bool:
    return len(documented) == len(ran) and all(_word_pattern(d).match(r) for d, r in zip(documented, ran))


def ran_verbatim(command: str, entry: dict) -> bool:
    """The documented command, word for word (placeholders filled), is the recorded command or a run of
    whole `&&` segments of it."""
    doc = _segments(shlex.split(command))
    ran = _segments(shlex.split(entry["line"]) if entry.get("line") else entry["argv"])
    return any(all(_words_match(d, r) for d, r in zip(doc, ran[i:i + len(doc)]))
               for i in range(len(ran) - len(doc) + 1))


def _drop_optional(words: list[str]) -> tuple[list[str], set[str]]:
    """The words outside `[...]`, and the option names inside."""
    kept, optional, depth = [], set(), 0
    for w in words:
        depth += w.count("[")
        if depth:
            optional |= {w.strip("[]").split("=")[0]} if w.strip("[]").startswith("-") else set()
        else:
            kept.append(w)
        depth -= w.count("]")
    return kept, optional


def _program(words: list[str]) -> list[str]:
    """The program and its subcommand: the words before the first option or path-like argument (and
    for a launcher, the module it launches)."""
    words = [w for w in words if not re.match(r"^[A-Z_]+=", w)]
    if words[:2] == [".venv/bin/python", "-m"]:
        words = ["python", *words[1:]]
    key = []
    for w in words:
        if w.startswith("-") and w != "-m" or ("/" in w or "." in w) and key[-1:] != ["-m"] or w in (">", "..."):
            break
        key.append(w)
    if key[:2] == ["accelerate", "launch"] and "-m" in words:
        key += ["-m", words[words.index("-m") + 1]]
    return key


def _options(words: list[str]) -> set[str]:
    return {w.split("=")[0] for w in words if w.startswith("-") and w != "-m"}


def form(command: str) -> list[tuple[tuple[str, ...], frozenset[str]]]:
    """Per `&&` segment: (program and subcommand, the options the docs require)."""
    out = []
    for segment in _segments(shlex.split(command)):
        kept, _ = _drop_optional(segment)
        out.append((tuple(_program(kept)), frozenset(_options(kept))))
    return out


def _segment_has_form(program: tuple[str, ...], options: frozenset[str], entry: dict) -> bool:
    ran = _segments(shlex.split(entry["line"]) if entry.get("line") else entry["argv"])
    return any(tuple(_program(r)) == program and options <= _options(r) for r in ran)


def ran_form(command: str, entries: list[dict]) -> bool:
    """Every `&&` segment's program ran (in some recorded command of `entries`) with at least the
    documented options."""
    return all(any(_segment_has_form(program, options, e) for e in entries) for program, options in form(command))


def _of(test: str, nodeid: str) -> bool:
    return nodeid == test or nodeid.startswith(test if test.endswith("/") else test + "::") or (
        "::" in test and nodeid.startswith(test + "["))


def _entries(record: list[dict], test: str) -> list[dict]:
    """The commands of `test` (a file, folder or node id), or of a session fixture (`fixture:NAME`)."""
    if test.startswith("fixture:"):
        return [e for e in record if e.get("fixture") == test.removeprefix("fixture:")]
    return [e for e in record if "argv" in e and _of(test, e.get("test", ""))]


def _ran(record: list[dict], test: str) -> bool:
    if test.startswith("fixture:"):
        return bool(_entries(record, test))
    return any(_of(test, e["ran"]) for e in record if "ran" in e)


# ------------------------------------------------------------------ the real parsers, nothing launched

class _Parsed(Exception):
    pass


def _parse_module(module: str, args: list[str], monkeypatch) -> argparse.Namespace:
    """Run `python -m module args` in this process up to its argparse `parse_args`, which is real;
    stop right after it (nothing the command does runs)."""
    import runpy
    import sys

    original = command_record.ORIGINAL_PARSE_ARGS  # not recorded: this only parses

    def parse_and_stop(parser, argv=None, namespace=None):
        raise _Parsed(original(parser, argv, namespace))

    with monkeypatch.context() as m, warnings.catch_warnings():
        warnings.filterwarnings("ignore", "'.*' found in sys.modules", RuntimeWarning)  # runpy, module imported before
        m.setattr(argparse.ArgumentParser, "parse_args", parse_and_stop)
        m.setattr(sys, "argv", [module, *args])
        try:
            if module == "ingredients.cli":
                from ingredients.cli import main

                main(args)
            else:
                runpy.run_module(module, run_name="__main__", alter_sys=True)
        except _Parsed as parsed:
            return parsed.args[0]
    raise AssertionError(f"python -m {module} finished without parsing its arguments with argparse")


def _parse_click(group, words: list[str]):
    ctx = group.make_context(group.name or "cli", list(words))  # the group's own options: none given
    name, command, rest = group.resolve_command(ctx, list(words))
    assert command is not None, f"{group.name} has no command {words[0]!r}"
    return command.make_context(name, rest, parent=ctx).params


def _filled(words: list[str]) -> list[str]:
    out = []
    for w in words:
        if w in ("...", "…"):
            continue
        for name in sorted(PLACEHOLDERS, key=len, reverse=True):
            w = re.sub(rf"\b{name}\b", PLACEHOLDERS[name], w)
        out.append(w.replace("<file>", "calibration"))
    return out


def parse_segment(words: list[str], monkeypatch) -> None:
    """Parse one command's documented arguments with its program's own parser (raises on a bad one)."""
    words = [w for w in words if not re.match(r"^[A-Z_]+=", w)]
    if ">" in words:
        words = words[:words.index(">")]
    if words[:2] == [".venv/bin/python", "-m"]:
        words = ["python", *words[1:]]
    program, args = words[0], _filled(words[1:])
    if program == "pytest" or words[:3] == ["python", "-m", "pytest"]:
        from _pytest.config import _prepareconfig  # pytest's own command-line parsing (plugins, ini), no run

        config = _prepareconfig(args[2:] if program == "python" else args)
        config._ensure_unconfigure()
    elif program == "python":
        assert args[0] == "-m", words
        _parse_module(args[1], args[2:], monkeypatch)
    elif program == "ingredients":
        _parse_module("ingredients.cli", args, monkeypatch)
    elif program == "dvc":
        from dvc.cli.parser import get_main_parser

        get_main_parser().parse_args(args)
    elif words[:2] == ["accelerate", "launch"]:
        from accelerate.commands.launch import launch_command_parser

        launched = launch_command_parser().parse_args(args[1:])
        assert launched.module, words
        if "..." not in words:
            _parse_module(launched.training_script, launched.training_script_args, monkeypatch)
    elif program == "ray":
        from ray.scripts.scripts import cli

        _parse_click(cli, args)
    elif program == "hf":
        from huggingface_hub.cli.hf import app

        _parse_click(app, args)
    elif program == "bash":  # a script: bash's syntax check; device_check.sh hands its arguments to its module
        run = subprocess.run(["bash", "-n", str(ROOT / args[0])], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        if args[0] == "scripts/device_check.sh":
            _parse_module("instruments.speed.device_check", args[1:], monkeypatch)
    elif program == "source":
        assert args == [".venv/bin/activate"], words
    else:
        raise AssertionError(f"no parser known for {program!r}: {' '.join(words)}")


def parse_documented(command: str, monkeypatch) -> None:
    for segment in _segments(shlex.split(command)):
        kept, _ = _drop_optional(segment)
        parse_segment(kept, monkeypatch)
        if kept != segment:  # a synopsis: also with every optional part, first alternative of a|b
            full = [w.strip("[]").split("|")[0] for w in segment if w.strip("[]")]
            parse_segment(full, monkeypatch)


# ------------------------------------------------------------------ the tests

def test_the_extractor_finds_the_readme_commands():
    commands = {c for p, c in ALL if p == "README.md"}
    assert "bash scripts/setup.sh && source .venv/bin/activate && dvc repro" in commands
    assert "python -m experiments.ablations queue experiments/*.yaml --run" in commands
    assert "hf download THUDM/CogVideoX-5b-I2V --local-dir weights/CogVideoX-5b-I2V" in commands  # inline, in a table
    eval_readme = [c for p, c in ALL if p == "eval/README.md"]  # a fence without a language
    assert sum(c.startswith("python -m eval.") for c in eval_readme) >= 7
    assert sum(c.startswith("python -m instruments.speed.sampling_speed --size full") for p, c in ALL) >= 4


def test_every_documented_command_is_classified():
    """A command added to a doc fails here until a test runs it (RUN) or it is classified."""
    unaccounted = sorted({f"{path}: {cmd}" for path, cmd in ALL if _class(cmd) is None})
    assert not unaccounted, "documented commands that no test runs and no list classifies:\n  " + "\n  ".join(unaccounted)


def test_the_lists_hold_only_documented_commands_and_existing_tests():
    documented = {c for _, c in ALL}
    for name, table in CLASSES.items():
        stale = sorted(set(table) - documented)
        assert not stale, f"{name} lists commands no longer in the docs: {stale}"
    for table in (RUN, MEASUREMENTS, SYNOPSES):
        for test in table.values():
            assert test in (".ci/run", "fixture:readme_project") or (ROOT / test.split("::")[0]).exists(), test
    assert set(OUTSIDE_CI) <= set(RUN.values())


@pytest.mark.parametrize("command", sorted({c for _, c in ALL if _class(c) not in (None, "NOT_COMMANDS")}))
def test_documented_arguments_parse_with_the_programs_own_parser(command, monkeypatch):
    """In this process, nothing launched: each segment's arguments through its program's parser."""
    parse_documented(command, monkeypatch)


def _record() -> list[dict]:
    return command_record.read()


@pytest.mark.parametrize("command", sorted(RUN))
def test_a_command_shown_as_run_is_in_the_record_of_its_test(command):
    test, record = RUN[command], _record()
    if not _ran(record, test):
        if FULL and test not in OUTSIDE_CI:
            pytest.fail(f"{test} did not run in this record ({command_record.record_path()}): .ci/run runs it")
        pytest.skip(f"{test} did not run in this session (parsed by its program's parser instead)")
    entries = _entries(record, test)
    assert any(ran_verbatim(command, e) for e in entries), (
        f"{test} ran but did not run `{command}` verbatim; it ran:\n  " +
        "\n  ".join(command_record.command_text(e) for e in entries[:40]))


@pytest.mark.parametrize("command", sorted([*MEASUREMENTS, *SYNOPSES]))
def test_a_measurement_or_synopsis_form_is_in_the_record_of_the_test_it_names(command):
    test, record = {**MEASUREMENTS, **SYNOPSES}[command], _record()
    if not _ran(record, test):
        pytest.skip(f"{test} did not run in this session (parsed by its program's parser instead)")
    if _program(shlex.split(command))[-1:] == ["pytest"] or command.startswith("python -m pytest"):
        return  # a pytest command: the slow test it selects (the one named) ran, which is its record
    entries = _entries(record, test)
    assert ran_form(command, entries), (
        f"{test} ran but no command of its record has the form of `{command}` ({form(command)}); it ran:\n  " +
        "\n  ".join(command_record.command_text(e) for e in entries[:40]))


def test_the_record_matching_is_word_for_word():
    """What counts as run: the words, placeholders filled, as a whole `&&` run; not a substring."""
    line = {"argv": ["bash", "-c", "source .venv/bin/activate && dvc queue logs too_big"], "line":
            "source .venv/bin/activate && dvc queue logs too_big"}
    assert ran_verbatim("dvc queue logs NAME", line) and ran_verbatim("source .venv/bin/activate", line)
    assert not ran_verbatim("dvc queue logs", line) and not ran_verbatim("dvc queue logs NAME --follow", line)
    argv = {"argv": ["python", "-m", "instruments.speed.identity_cost", "identity-cost", "--size", "reduced", "--rounds", "1"]}
    assert ran_form("python -m instruments.speed.identity_cost identity-cost --size full --rounds 5", [argv])
    assert not ran_form("python -m instruments.speed.identity_cost identity-cost --size full --rounds 7 --compile", [argv])
    assert not ran_form("python -m ingredients.data.synth --out raw && python -m ingredients.data.curate --raw raw --out cur",
                        [{"argv": ["python", "-m", "ingredients.data.curate", "--raw", "r", "--out", "c"]}])
    assert not ran_verbatim("python -m instruments.speed.identity_cost identity-cost --size full --rounds 5", argv)


@pytest.mark.parametrize("path", [p for p in documented_files() if scripts(p)], ids=lambda p: p.name)
def test_documented_scripts_are_valid_bash(path):
    for script in scripts(path):
        assert subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True).returncode == 0


def test_the_docs_cite_test_files_that_exist():
    cited = {m for p in documented_files() for m in re.findall(r"tests/[\w/]+\.py", p.read_text(encoding="utf-8"))}
    assert cited and not [c for c in cited if not (ROOT / c).is_file()]
