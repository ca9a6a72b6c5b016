"""`ingredients` command line: prepare a model folder, generate a video from photos and a prompt.

    ingredients prepare --out models/tiny                        # the tiny profile, offline
    ingredients generate --photo a.jpg --photo b.jpg --prompt "..." --out video.mp4
    ingredients generate --from-json video.json --out again.mp4  # reproduce a generation
    ingredients generate ... --params profiles/full.yaml          # its sample: dtype, VAE tiling, offload, compile

`generate` writes the video, a PNG strip of frames beside it (`video.strip.png`) and a JSON with
everything needed to reproduce it (`video.json`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger("ingredients")

DEFAULT_TINY_FOLDER = Path("models/tiny")
# settings of a generation; None = the model's default (its sample size, the reference's sampling)
GENERATE_DEFAULTS: dict[str, Any] = {
    "model": None,
    "photos": None,
    "prompt": None,
    "negative_prompt": None,
    "steps": None,
    "guidance": None,
    "seed": 0,
    "height": None,
    "width": None,
    "frames": None,
    "fps": 8,
    "reference_batch_semantics": False,
    "runtime": None,  # the sample: runtime keys used (dtype, vae_tiling, ...); from --params or an earlier JSON
}
PROFILE_SAMPLING = {"tiny": {"steps": 8, "guidance": 6.0}, "full": {"steps": 50, "guidance": 6.0}}


def resolve_generate_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Merge defaults < --from-json < explicit flags; validate what a run needs."""
    settings = dict(GENERATE_DEFAULTS)
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())["settings"]
        unknown = set(saved) - set(GENERATE_DEFAULTS)
        if unknown:
            raise SystemExit(f"{args.from_json}: unknown settings {sorted(unknown)}")
        settings.update(saved)
    for key in GENERATE_DEFAULTS:
        if key == "runtime":
            continue  # set from --params by sample_runtime
        value = getattr(args, key, None)
        if value is not None and not (key == "reference_batch_semantics" and value is False):
            settings[key] = value
    if not settings["photos"]:
        raise SystemExit("give at least one --photo (one per identity)")
    if not settings["prompt"]:
        raise SystemExit("give a --prompt describing the video")
    settings["photos"] = [str(Path(p).resolve()) for p in settings["photos"]]
    for photo in settings["photos"]:
        if not Path(photo).is_file():
            raise SystemExit(f"photo not found: {photo}")
    return settings


def sample_runtime(params_file: Path | None, saved: dict | None):
    """The sampling runtime settings (`sample:` keys dtype, vae_tiling, ...): from --params' sample:
    section, else from an earlier generation's JSON, else the defaults (the tiny profile's)."""
    from ingredients.config import load_params, section, validate_model
    from ingredients.sampling.runtime import RUNTIME_KEYS
    from ingredients.sampling.sample import SampleParams

    if params_file is not None:
        values = section(load_params(params_file), "sample", params_file)
        return validate_model(SampleParams, {k: v for k, v in values.items() if k in RUNTIME_KEYS}, "sample")
    return validate_model(SampleParams, dict(saved or {}), "sample")


def cmd_prepare(args: argparse.Namespace) -> None:
    from ingredients.model_folder.folder import prepare_tiny_folder

    if args.profile != "tiny":
        raise SystemExit("only the tiny profile is built here; the full profile's folders are checked by the DVC prepare stage")
    prepare_tiny_folder(args.out, seed=args.seed)
    logger.info("tiny model folder ready at %s", args.out)


def cmd_generate(args: argparse.Namespace) -> None:
    import torch

    from ingredients.model_folder.folder import load_face_conditioner, load_pipeline, prepare_tiny_folder
    from ingredients.files.hashing import file_sha256
    from ingredients.mlflow_run import git_revision
    from ingredients.files.frames import frame_strip, to_uint8
    from ingredients.files.video_io import write_video
    from ingredients.files.atomic import write_json, atomic_path

    settings = resolve_generate_settings(args)
    model = Path(settings["model"] or DEFAULT_TINY_FOLDER)
    if not (model / "model_index.json").is_file():
        if settings["model"] is not None:
            raise SystemExit(f"{model}/model_index.json is missing: not a model folder")
        logger.info("no model folder at %s: building the tiny profile (offline, seconds)", model)
        prepare_tiny_folder(model)
    settings["model"] = str(model.resolve())
    limit = json.loads((model / "transformer" / "config.json").read_text()).get("max_identities")
    if limit is not None and len(settings["photos"]) > limit:
        raise SystemExit(f"{len(settings['photos'])} photos given; the model at {model} takes at most "
                         f"max_identities={limit} identities")
    profile = "tiny" if (model / "face_encoder" / "tiny_clip").is_dir() else "full"
    for key, value in PROFILE_SAMPLING[profile].items():
        if settings[key] is None:
            settings[key] = value

    from ingredients.sampling.runtime import DTYPES, RUNTIME_KEYS, configure_pipeline

    runtime = sample_runtime(args.params, settings["runtime"])
    settings["runtime"] = {k: getattr(runtime, k) for k in RUNTIME_KEYS}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    start = time.perf_counter()
    pipe = configure_pipeline(load_pipeline(model, DTYPES[runtime.dtype]), runtime, device)
    conditioner = load_face_conditioner(model, pipe, cache_dir=args.cache_dir)
    references = conditioner(settings["photos"])  # warns about doubtful photos itself
    out = pipe(
        prompt=settings["prompt"],
        negative_prompt=settings["negative_prompt"],
        references=references,
        height=settings["height"],
        width=settings["width"],
        num_frames=settings["frames"],
        num_inference_steps=settings["steps"],
        guidance_scale=settings["guidance"],
        generator=torch.Generator().manual_seed(int(settings["seed"])),
        reference_batch_semantics=settings["reference_batch_semantics"],
        output_type="np",
    )
    video = to_uint8(out.frames[0])  # [F, H, W, 3]
    elapsed = time.perf_counter() - start

    out_path = Path(args.out)
    write_video(out_path, video, fps=settings["fps"])
    with atomic_path(out_path.with_suffix(".strip.png")) as tmp:
        from PIL import Image

        Image.fromarray(frame_strip(video, count=8)).save(tmp, format="PNG")
    record = {
        "settings": settings,
        "photos_sha256": [file_sha256(p) for p in settings["photos"]],
        "profile": profile,
        "video": {"path": out_path.name, "frames": int(video.shape[0]), "height": int(video.shape[1]),
                  "width": int(video.shape[2]), "sha256_frames": hashlib.sha256(video.tobytes()).hexdigest()},
        "scheduler": type(pipe.scheduler).__name__,
        "seconds": round(elapsed, 3),
        "git_revision": git_revision(),
        "versions": {"torch": torch.__version__, **_versions()},
        "reproduce": f"ingredients generate --from-json {out_path.with_suffix('.json').name} --out {out_path.name}",
    }
    write_json(out_path.with_suffix(".json"), record)
    logger.info("wrote %s (%d frames, %dx%d) in %.1fs", out_path, video.shape[0], video.shape[2], video.shape[1], elapsed)


def _versions() -> dict[str, str]:
    import diffusers
    import transformers

    return {"diffusers": diffusers.__version__, "transformers": transformers.__version__}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ingredients", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="build the tiny profile's model folder (offline)")
    p.add_argument("--profile", choices=["tiny", "full"], default="tiny")
    p.add_argument("--out", type=Path, default=DEFAULT_TINY_FOLDER)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_prepare)

    g = sub.add_parser("generate", help="K photos + a prompt -> a video with those people")
    g.add_argument("--photo", dest="photos", action="append", help="a reference photo, one per identity (repeat)")
    g.add_argument("--prompt")
    g.add_argument("--negative-prompt", dest="negative_prompt")
    g.add_argument("--out", required=True, type=Path, help="output video (.mp4)")
    g.add_argument("--model", help=f"model folder (default: {DEFAULT_TINY_FOLDER}, built if missing)")
    g.add_argument("--steps", type=int)
    g.add_argument("--guidance", type=float)
    g.add_argument("--seed", type=int)
    g.add_argument("--height", type=int)
    g.add_argument("--width", type=int)
    g.add_argument("--frames", type=int)
    g.add_argument("--fps", type=float)
    g.add_argument("--reference-batch-semantics", dest="reference_batch_semantics", action="store_true",
                   help="route both guidance branches with the negative branch's features, as the reference does")
    g.add_argument("--from-json", dest="from_json", help="reuse the settings of an earlier generation's JSON")
    g.add_argument("--params", type=Path, help="params file whose sample: runtime keys apply (dtype, vae_tiling, "
                                               "vae_slicing, offload, compile, step_cache, ...; e.g. a profile)")
    g.add_argument("--cache-dir", dest="cache_dir", default=".ingredients_cache/references",
                   help="cache of processed reference photos")
    g.set_defaults(func=cmd_generate)

    from ingredients.plan.plan import add_plan_arguments

    c = sub.add_parser("plan", help="memory, FLOPs, time and GPU-hours of every GPU stage, on CPU in seconds (no weights)")
    c.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: params.yaml)")
    add_plan_arguments(c)
    c.set_defaults(func=cmd_plan)
    return parser


def cmd_plan(args: argparse.Namespace) -> None:
    import sys

    from ingredients.plan.plan import markdown_table, run

    sys.stdout.write(markdown_table(run(args)))  # the table is the command's output (JSON and .md written too)


def main(argv: list[str] | None = None) -> None:
    from ingredients.faces.errors import ImageReadError, NoFaceError

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        args.func(args)
    except (NoFaceError, ImageReadError, ValueError) as exc:  # bad input: its message names it; no traceback
        if args.verbose:
            raise
        raise SystemExit(f"error: {exc}") from exc


if __name__ == "__main__":
    main()
