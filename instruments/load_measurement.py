"""Evaluation under load: N tiny videos evaluated in one run and in S shard runs, in subprocesses.

    python -m instruments.load_measurement --videos 200 --out DIR [--shards 4] [--compare 50] [--jobs 1]
                             [--frames 9] [--height 128] [--width 128] [--params params.yaml]

Builds a benchmark of N cases from real photos shipped in installed packages (K = 1..2 identities,
several prompts) and one tiny video per case: the oracle composite (the reference faces drifting
over a moving background), every `no_face_every`-th case only the background (no face). Then runs
`python -m eval.run` as separate processes, each from an empty output folder (no resume cache):
once over all N cases, once over the first n cases for every `--compare` n (does peak memory grow
with the number of videos?), and as S shards (`--shard i/S`) merged with `python -m eval.merge`;
`--jobs` evaluation processes run at a time (1, the default, keeps their wall times clean). Each
process's wall time and peak RSS are recorded (its VmHWM, read inside the child through
`ingredients.peak_memory`; see `measure_main`); the merged per_video.jsonl, metrics.json,
missing.json and per-video face files must equal the single run's byte for byte.

fid_face only runs once a method has enough samples on both sides (2 x 128 for dlib), counted
honestly: distinct reference photos, and at most one generated face per identity per video. The
few photos of this benchmark never reach that, so fid_face stays missing here; its first use would
import torchmetrics' FID (~250 MiB of RSS). `fid_probe`, measured the same way, gives that step; the
report states the growth both raw and beyond it (beyond it only when the large run computed FID).

Writes DIR/load_report.json (atomically); exits with status 1 when the runs differ. Layout:
DIR/bench/ (refs/, load.jsonl, load_first<n>.jsonl), DIR/videos/oracle/, DIR/runs/<run>/,
DIR/logs/<run>.log (each process's stdout and stderr) and <run>.rss.json (its memory).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from eval.baselines import composite, face_crop, moving_background
from ingredients.data.packaged_photos import load_photos
from ingredients.sampling.benchmark import Case, read_benchmark, write_benchmark
from ingredients.faces.image_io import load_rgb
from ingredients.files.video_io import write_video
from ingredients.files.atomic import atomic_path, write_json
from ingredients.faces.registry import build_analyzer

logger = logging.getLogger(__name__)

METHOD = "oracle"
PHOTOS = ("astronaut", "grace", "hanks", "t1_a", "t1_b")
PROMPTS = (
    "a person talking to the camera in a bright room",
    "people chatting at a table in a busy cafe",
    "walking through a park on a sunny afternoon",
    "standing in front of a whiteboard, presenting",
    "a video call on a laptop, smiling and nodding",
)
# Reference crops keep 0.25 x the face box on each side: at 128 px a 2-identity frame then shows
# faces of ~40 px, the smallest dlib's HOG detector (upsample 1) finds.
CROP_MARGIN = 0.25
COMPARED_FILES = ("per_video.jsonl", "metrics.json", "missing.json")


@dataclass(frozen=True)
class ProcessRun:
    """One measured child process: name, command, exit status, wall seconds, peak RSS (VmHWM) over
    its lifetime and at startup (interpreter and this module's imports, before the target ran)."""

    name: str
    argv: tuple[str, ...]
    returncode: int
    seconds: float
    peak_rss_mib: float
    startup_rss_mib: float
    log: Path

    def summary(self) -> dict:
        return {"seconds": round(self.seconds, 2), "peak_rss_mib": round(self.peak_rss_mib, 1),
                "startup_peak_rss_mib": round(self.startup_rss_mib, 1)}


def identity_sets(names: Sequence[str], max_identities: int = 2) -> list[tuple[str, ...]]:
    """Every subset of 1..max_identities names, smaller subsets first."""
    return [s for k in range(1, max_identities + 1) for s in combinations(names, k)]


def build_load_benchmark(root: str | os.PathLike, n_cases: int, max_identities: int = 2, seed: int = 0) -> Path:
    """Write root/refs/<photo>.png and root/load.jsonl with n_cases cases; returns the JSONL.

    Case i uses identity set i mod |sets| and prompt i mod |PROMPTS| (so the pairs vary), seed + i.
    """
    if n_cases < 1:
        raise ValueError(f"n_cases must be >= 1, got {n_cases}")
    root = Path(root)
    photos = load_photos(PHOTOS)
    refs: dict[str, Path] = {}
    for name in PHOTOS:
        path = root / "refs" / f"{name}.png"
        with atomic_path(path) as tmp:
            Image.fromarray(photos[name]).save(tmp, format="PNG")
        refs[name] = path.resolve()
    sets = identity_sets(PHOTOS, max_identities)
    cases = []
    for i in range(n_cases):
        names = sets[i % len(sets)]
        cases.append(Case(case_id=f"c{i:04d}_" + "-".join(names), prompt=PROMPTS[i % len(PROMPTS)],
                          references=tuple(refs[n] for n in names), seed=seed + i))
    return write_benchmark(root / "load.jsonl", cases)


def write_first_cases(benchmark: Path, n: int) -> Path:
    """A benchmark of the first n cases of `benchmark`, beside it (load_first<n>.jsonl)."""
    cases = read_benchmark(benchmark)
    if not 1 <= n <= len(cases):
        raise ValueError(f"--compare {n}: need 1 <= n <= {len(cases)} (the number of videos)")
    return write_benchmark(benchmark.parent / f"load_first{n}.jsonl", cases[:n])


def load_video_frames(crops: list[np.ndarray], n_frames: int, height: int, width: int, seed: int) -> np.ndarray:
    """uint8 [F, H, W, 3]: the crops composited over a seeded moving background (no crops: background only)."""
    background = moving_background(n_frames, height, width, seed)
    if not crops:
        return background
    face_size = int(min(height * 0.9, width * 0.9 / len(crops)))
    return composite(background, crops, face_size)


def write_load_videos(benchmark: Path, out_dir: Path, n_frames: int = 9, height: int = 128, width: int = 128,
                      no_face_every: int = 10, fps: float = 8.0) -> dict[str, int]:
    """One video per case into out_dir/{case_id}.mp4; case i with i % no_face_every == no_face_every - 1
    gets no face. Returns {"with_faces": n, "without_face": m}."""
    if no_face_every < 1:
        raise ValueError(f"no_face_every must be >= 1, got {no_face_every}")
    analyzer = build_analyzer("dlib")
    crops: dict[Path, np.ndarray] = {}
    counts = {"with_faces": 0, "without_face": 0}
    out_dir.mkdir(parents=True, exist_ok=True)
    for i, case in enumerate(tqdm(read_benchmark(benchmark), desc="write videos", unit="video")):
        no_face = i % no_face_every == no_face_every - 1
        for ref in case.references:
            if ref not in crops:
                crops[ref] = face_crop(load_rgb(ref), analyzer, margin=CROP_MARGIN)
        case_crops = [] if no_face else [crops[r] for r in case.references]
        frames = load_video_frames(case_crops, n_frames, height, width, case.seed)  # [F, H, W, 3]
        write_video(out_dir / f"{case.case_id}.mp4", frames, fps)
        counts["without_face" if no_face else "with_faces"] += 1
    return counts


def fid_probe(n_real: int = 330, n_fake: int = 2700, dim: int = 128, seed: int = 0) -> float:
    """One Fréchet distance computed the way fid_face does at aggregation (torchmetrics, imported on
    first use) on random features of the 200-video run's sizes; run under `measure_main` it gives the
    one-time memory step that fid_face adds to a run once it has enough face crops."""
    import torch

    from eval.metrics.fid_face import PrecomputedFeatures, frechet_distance

    rng = np.random.default_rng(seed)
    real = torch.from_numpy(rng.standard_normal((n_real, dim)))  # [N_real, D]
    fake = torch.from_numpy(rng.standard_normal((n_fake, dim)))  # [N_fake, D]
    return frechet_distance(real, fake, PrecomputedFeatures(dim))


def measure_main(argv: list[str]) -> None:
    """Child side of `run_measured`: `measure REPORT TARGET ARGS...` runs TARGET (a module name, a
    .py script, or `module:function`, called without arguments) as __main__ with ARGS, then writes
    REPORT: {"peak_rss_bytes": process-lifetime VmHWM, "startup_peak_rss_bytes": VmHWM before
    TARGET ran, "exit_code"}.

    The peak is read inside the child because a parent cannot get it: the ru_maxrss that wait4
    reports carries the parent's own RSS over through fork/exec; the exec'd process's VmHWM does not.
    """
    import importlib
    import runpy

    if len(argv) < 2:
        raise SystemExit("usage: python -m instruments.load_measurement measure REPORT TARGET [ARGS...]")
    report, target, *args = argv
    # instruments.speed imports lazily: this brings in no sampling stack to inflate the peak
    from ingredients.peak_memory import peak_bytes, peak_memory

    startup = peak_bytes(peak_memory("cpu", since_reset=False))
    sys.argv = [target, *args]
    code: int | str | None = 0
    try:
        if ":" in target:
            module, _, function = target.partition(":")
            getattr(importlib.import_module(module), function)()
        elif target.endswith(".py"):
            runpy.run_path(target, run_name="__main__")
        else:
            runpy.run_module(target, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code
    peak = peak_memory("cpu", since_reset=False)
    exit_code = code if code is None or isinstance(code, int) else str(code)
    write_json(report, {"peak_rss_bytes": peak_bytes(peak), "scope": peak["scope"],
                        "startup_peak_rss_bytes": startup, "exit_code": exit_code})
    if code:
        raise SystemExit(code)


def run_measured(commands: dict[str, list[str]], log_dir: Path, jobs: int = 1) -> dict[str, ProcessRun]:
    """Run {name: [TARGET, ARGS...]} (TARGET a module name or .py script) as child processes, at
    most `jobs` at a time, each through `measure_main` and logging to log_dir/<name>.log.

    A failed child stops the others this call started and raises RuntimeError naming its log and
    quoting its tail.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    log_dir.mkdir(parents=True, exist_ok=True)
    pending = list(commands)
    running: dict[str, tuple[subprocess.Popen, float]] = {}
    results: dict[str, ProcessRun] = {}
    progress = tqdm(total=len(pending), desc="evaluation processes", unit="run")
    try:
        while pending or running:
            while pending and len(running) < jobs:
                name = pending.pop(0)
                rss = log_dir / f"{name}.rss.json"
                rss.unlink(missing_ok=True)
                argv = [sys.executable, "-m", "instruments.load_measurement", "measure", str(rss), *commands[name]]
                with open(log_dir / f"{name}.log", "wb") as fh:
                    running[name] = (subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT), time.perf_counter())
            time.sleep(0.05)
            for name, (proc, t0) in list(running.items()):
                if proc.poll() is None:
                    continue
                seconds = time.perf_counter() - t0
                del running[name]
                log, rss = log_dir / f"{name}.log", log_dir / f"{name}.rss.json"
                if proc.returncode != 0 or not rss.is_file():
                    tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
                    raise RuntimeError(f"{name} exited with status {proc.returncode}: {' '.join(commands[name])}\n"
                                       f"log {log} ends with:\n{tail}")
                mem = json.loads(rss.read_text(encoding="utf-8"))
                results[name] = ProcessRun(name, tuple(commands[name]), proc.returncode, seconds,
                                           mem["peak_rss_bytes"] / 2**20, mem["startup_peak_rss_bytes"] / 2**20, log)
                progress.update(1)
    finally:
        for proc, _ in running.values():  # only after a failure: stop the children started here
            proc.terminate()
            proc.wait()
        progress.close()
    return {name: results[name] for name in commands}


def eval_command(benchmark: Path, videos: Path, out: Path, shard: tuple[int, int] = (0, 1),
                 params: Path | None = None) -> list[str]:
    """[module, args...] of one `python -m eval.run` process over the load videos."""
    argv = ["eval.run", "--benchmark", str(benchmark), "--method", f"{METHOD}={videos}",
            "--out", str(out), "--shard", f"{shard[0]}/{shard[1]}"]
    return argv + (["--params", str(params)] if params is not None else [])


def compare_runs(a: Path, b: Path) -> dict[str, bool]:
    """Byte equality of two run folders' per_video.jsonl, metrics.json, missing.json and per-video
    face files (the inputs of the aggregate-level metrics); {file or 'faces': equal}."""
    equal = {}
    for name in COMPARED_FILES:
        fa, fb = a / name, b / name
        equal[name] = fa.is_file() and fb.is_file() and fa.read_bytes() == fb.read_bytes()
    faces_a = sorted(p.relative_to(a) for p in a.glob("cache/*/*.faces.safetensors"))
    faces_b = sorted(p.relative_to(b) for p in b.glob("cache/*/*.faces.safetensors"))
    equal["faces"] = faces_a == faces_b and all((a / p).read_bytes() == (b / p).read_bytes() for p in faces_a)
    return equal


def fid_computed(run_dir: Path) -> bool:
    """Whether a run's metrics.json holds a fid_face value (it needs enough face crops)."""
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    return any(name.startswith("fid_face/") for name in metrics.get(METHOD, {}))


def rss_growth(scaling: list[dict], fid_step: ProcessRun | None) -> dict:
    """Peak RSS growth from the smallest to the largest run, and that growth less fid_face's
    one-time step (`fid_probe`'s peak over its startup) when only the larger run computed fid_face."""
    if fid_step is None or len(scaling) < 2:
        return {"rss_growth_mib": None, "fid_step_mib": None, "rss_growth_beyond_fid_mib": None}
    small, large = scaling[0], scaling[-1]
    growth = large["peak_rss_mib"] - small["peak_rss_mib"]
    step = fid_step.peak_rss_mib - fid_step.startup_rss_mib
    beyond = growth - step if large["fid_face_computed"] and not small["fid_face_computed"] else growth
    return {"rss_growth_mib": round(growth, 1), "fid_step_mib": round(step, 1),
            "rss_growth_beyond_fid_mib": round(beyond, 1)}


def run_load_measurement(out: str | os.PathLike, videos: int = 200, shards: int = 4, compare: Sequence[int] = (50,),
                  frames: int = 9, height: int = 128, width: int = 128, no_face_every: int = 10,
                  jobs: int = 1, params: str | os.PathLike | None = None) -> dict:
    """Build the load benchmark and videos, run single, compare-size and shard evaluations plus the
    merge in subprocesses, and write out/load_report.json; returns the report."""
    if shards < 2:
        raise ValueError(f"shards must be >= 2 (a split to compare with the single run), got {shards}")
    if videos < shards:
        raise ValueError(f"videos ({videos}) must be >= shards ({shards}): every shard needs a case")
    out = Path(out)
    params_path = Path(params).resolve() if params is not None else None
    benchmark = build_load_benchmark(out / "bench", videos)
    video_dir = out / "videos" / METHOD
    counts = write_load_videos(benchmark, video_dir, frames, height, width, no_face_every)
    runs_dir = out / "runs"
    if runs_dir.exists():
        shutil.rmtree(runs_dir)  # every run starts without a resume cache, so all of them do the work
    commands = {"single": eval_command(benchmark, video_dir, runs_dir / "single", params=params_path)}
    sizes = sorted({n for n in compare if n != videos})
    for n in sizes:
        commands[f"first{n}"] = eval_command(write_first_cases(benchmark, n), video_dir, runs_dir / f"first{n}",
                                             params=params_path)
    shard_commands = {f"shard{i}": eval_command(benchmark, video_dir, runs_dir / f"shard{i}", (i, shards), params_path)
                      for i in range(shards)}
    if sizes:
        commands["fid_probe"] = ["instruments.load_measurement:fid_probe"]
    results = run_measured(commands | shard_commands, out / "logs", jobs)
    merge_argv = ["eval.merge", "--runs", *(str(runs_dir / n) for n in shard_commands),
                  "--out", str(runs_dir / "merged")]
    results |= run_measured({"merge": merge_argv}, out / "logs")

    equal_files = compare_runs(runs_dir / "single", runs_dir / "merged")
    single = results["single"]
    run_names = [f"first{n}" for n in sizes] + ["single"]
    scaling = [{"videos": n, **results[name].summary(), "fid_face_computed": fid_computed(runs_dir / name)}
               for n, name in zip([*sizes, videos], run_names)]
    report = {
        "videos": videos,
        "videos_with_faces": counts["with_faces"],
        "videos_without_face": counts["without_face"],
        "frames": frames,
        "height": height,
        "width": width,
        "shards": shards,
        "jobs": jobs,
        "single": {"videos": videos, **single.summary()},
        "shard_runs": [{"shard": f"{i}/{shards}", "videos": len(range(i, videos, shards)),
                        **results[f"shard{i}"].summary()} for i in range(shards)],
        "shards_seconds_total": round(sum(results[n].seconds for n in shard_commands), 2),
        "shards_peak_rss_mib_max": round(max(results[n].peak_rss_mib for n in shard_commands), 1),
        "merge": results["merge"].summary(),
        "scaling": scaling,
        **rss_growth(scaling, results["fid_probe"] if sizes else None),
        "fid_probe": results["fid_probe"].summary() if sizes else None,
        "equal": all(equal_files.values()),
        "equal_files": equal_files,
        "faces_files": len(list((runs_dir / "single").glob("cache/*/*.faces.safetensors"))),
        "metrics": json.loads((runs_dir / "single" / "metrics.json").read_text(encoding="utf-8")),
        "commands": {name: "python -m " + " ".join(r.argv) for name, r in results.items() if name != "fid_probe"},
        "environment": {"python": platform.python_version(), "platform": platform.platform(),
                        "cpu_count": os.cpu_count()},
    }
    write_json(out / "load_report.json", report)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m instruments.load_measurement", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=200, help="number of cases and videos")
    parser.add_argument("--out", required=True, help="working folder; its runs/ is cleared first")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--compare", type=int, nargs="*", default=[50],
                        help="also evaluate the first n cases alone, for peak RSS vs number of videos")
    parser.add_argument("--jobs", type=int, default=1,
                        help="evaluation processes run at the same time (>1 shortens the test, blurs the timings)")
    parser.add_argument("--frames", type=int, default=9)
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--no-face-every", type=int, default=10, help="every n-th video shows no face")
    parser.add_argument("--params", default=None, help="params.yaml with an eval: section (default: eval defaults)")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["measure"]:
        measure_main(argv[1:])
        return
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    report = run_load_measurement(args.out, args.videos, args.shards, args.compare, args.frames, args.height, args.width,
                           args.no_face_every, args.jobs, args.params)
    logger.info("single run: %d videos, %.1f s, peak RSS %.1f MiB; shards: max peak RSS %.1f MiB; "
                "peak RSS growth over the smallest compare run: %s MiB (fid_face step %s MiB, beyond it %s MiB); "
                "equal: %s", report["videos"], report["single"]["seconds"], report["single"]["peak_rss_mib"],
                report["shards_peak_rss_mib_max"], report["rss_growth_mib"], report["fid_step_mib"],
                report["rss_growth_beyond_fid_mib"], report["equal"])
    if not report["equal"]:
        logger.error("the merged shard runs differ from the single run: %s", report["equal_files"])
        raise SystemExit(1)


if __name__ == "__main__":
    main()
