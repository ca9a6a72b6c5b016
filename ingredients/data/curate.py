"""Data curation: raw videos -> training clips with identities, reference crops, masks and captions.

Per video (`ingredients.data.video_curation`, the code a worker imports): shots (PySceneDetect's
detectors on the decoded frames; shots longer than `max_clip_seconds` split) -> face detection every
`detect_stride` frames -> tracks within each shot -> tracks clustered into
identities over the whole video (recognizer embeddings, agglomerative, cannot-link for co-visible
tracks; one video's identities are consistent across its shots, which lets a clip take its
reference crop from another shot) -> one candidate clip per shot -> filters (each drop counted by
reason) -> per kept clip: caption, reference crop per identity, masks. Frames stream through these
passes as displayed (rotation and pixel aspect applied, `ingredients.files.video_decode`) with their
presentation times (a range in seconds selects by time; clips record their times); shots and faces
are found on frames scaled to `detect_max_side`, masks saved at `mask_max_side`: memory is flat in
video length and resolution.

Each video's result is written atomically to `OUT/work/KEY.json` once it is complete (reference
crops and masks are written before it; KEY is a plain name, never a path), so a killed run resumes
where it stopped: finished videos are reused when their inputs' fingerprint (the video file, its
caption sidecars, the range and caption its source gives) and the settings fingerprint match (temp
files of writes the kill interrupted are removed at the start). The manifest (`OUT/manifest.jsonl`,
and `OUT/val.jsonl`: the videos `data.val_fraction` holds out, whole videos), the report
(`OUT/report.json`, with each video's outcome: the clips it gave or why none) and a contact sheet
(`OUT/contact_sheet.png`) are written atomically at the end from all per-video results, in video
order, so a resumed run produces the same manifest as an uninterrupted one.

Corrupt or empty videos, still pictures named like videos, ranges past a video's end or holding no
frame, videos without faces and missing or unreadable caption sidecars are counted (report
`videos.skipped`, each with its message in `videos.outcomes`) and skipped; so is a video whose curation
raised or whose worker died past the retries (`failed`, not saved: the next run tries it again). The
command exits non-zero, naming report.json, when no clip is kept, the training or validation set is
empty, or more than `curate.max_failed_fraction` of the videos failed: DVC never caches such a
folder. The videos run on the `compute:` engine (`ingredients.compute`: a process pool of
`num_workers`, or Ray tasks). With ground truth (`NAME.gt.json`, the tiny data), the report scores
identity assignment and masks (see `ingredients.data.scoring`).

CLI: `python -m ingredients.data.curate --params params.yaml --out DIR` (reads `data:`, `curate:` and `compute:`;
`--raw DIR` curates the top level of a folder instead of the `data:` source, e.g. the held-out videos).
Sources (`ingredients.data.sources`): the synth folder, a recursive folder tree of videos, or a list
of clips with frame or second ranges; everything they read lies under `data.path`.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import time
from collections import Counter
from pathlib import Path

from ingredients.compute import ComputeParams, compute_params, run_map
from ingredients.config import load_params, load_section, section
from ingredients.data.curation_params import CurationParams, params_from_mapping
from ingredients.data.manifest import ManifestClip, write_manifest
from ingredients.data.scoring import pool_scores
from ingredients.data.sources import DataParams, collect_items, is_validation, skip_counts
from ingredients.data.video_curation import components, failed_result, load_result, result_path, run_one
from ingredients.files.atomic import remove_stale_temps, write_json

logger = logging.getLogger(__name__)


def curate(raw: str | os.PathLike | DataParams, out_dir: str | os.PathLike, params: CurationParams | None = None,
           compute: ComputeParams | None = None) -> dict:
    """Curate every video of the source `raw` (a `data:` section, or a folder of raw videos read at its
    top level) into `out_dir` on the `compute` engine (default: local); returns the report (also
    written to disk)."""
    from ingredients.data.report import build_report, write_contact_sheet

    params = params or CurationParams()
    source = raw if isinstance(raw, DataParams) else DataParams(source="synth", path=str(raw))
    out_dir = Path(out_dir)
    videos, skipped_before = collect_items(source)  # a list curation refuses stops the run before any output
    out_dir.mkdir(parents=True, exist_ok=True)
    # what a killed run's writes left behind, before it is cached with the output folder
    remove_stale_temps(out_dir, recursive=False)
    for sub in ("work", "refs", "masks"):
        remove_stale_temps(out_dir / sub)
    params_fp = params.fingerprint()
    results: dict[str, dict] = {}
    todo = []
    for v in videos:
        res = load_result(result_path(out_dir, v.key), params_fp, v)
        if res is None:
            todo.append(v)
        else:
            results[v.key] = res
    logger.info("%d videos: %d done before, %d to curate", len(videos), len(results), len(todo))
    if todo:  # a configuration error (a missing weights file, a bad option) stops the run here, not once per video
        components(params)
    wall0 = time.perf_counter()
    # run_one lives in an importable module: a pool or Ray pickles it by name, never this driver's state
    work = functools.partial(run_one, out_dir=out_dir, params=params)
    for video, result in run_map(work, todo, compute, workers=params.num_workers, desc="curate"):
        results[video.key] = failed_result(video, params_fp, result) if isinstance(result, BaseException) else result
    wall = time.perf_counter() - wall0
    ordered = [results[v.key] for v in videos]
    # held out by video (every range of a video on the same side), looked up in a set
    held = {v.split_key for v in videos if is_validation(v.split_key, source.val_fraction, source.val_seed)}
    train_clips, val_clips = [], []
    for v, r in zip(videos, ordered):
        (val_clips if v.split_key in held else train_clips).extend(ManifestClip.model_validate(c) for c in r["clips"])
    clips = [ManifestClip.model_validate(c) for r in ordered for c in r["clips"]]
    write_manifest(out_dir / "manifest.jsonl", train_clips)
    if source.val_fraction > 0:  # held out by video: no clip of a validation video is trained on
        write_manifest(out_dir / "val.jsonl", val_clips)
    report = build_report(ordered, params, wall_seconds=wall, videos_this_run=[v.key for v in todo])
    if skipped_before:  # list lines that named no usable clip: counted with the videos skipped, each an outcome
        report["videos"]["total"] += len(skipped_before)
        report["videos"]["skipped"] = dict(sorted((Counter(report["videos"]["skipped"]) + skip_counts(skipped_before)).items()))
        for line in skipped_before:
            report["videos"]["skipped_files"][line.key] = line.message
            report["videos"]["outcomes"][line.key] = {"clips": 0, "why": line.reason, "message": line.message}
        report["videos"]["without_clips"] += len(skipped_before)
    # root: where the manifest's videos may live, for its readers (training): the folder curation read
    report["source"] = {"source": source.source, "path": source.path,
                        "root": os.path.relpath(Path(source.path).resolve(), out_dir.resolve())}
    report["split"] = {"val_fraction": source.val_fraction, "val_videos": sorted(held), "val_clips": len(val_clips),
                       "train_clips": len(train_clips)}
    report["throughput"]["engine"] = compute.engine if compute is not None else "local"
    if any(r.get("score") for r in ordered):
        report["ground_truth"] = pool_scores([r["score"] for r in ordered if r.get("score")])
    write_json(out_dir / "report.json", report)
    if params.contact_sheet_clips > 0 and clips:
        write_contact_sheet(out_dir / "contact_sheet.png", out_dir, clips, params.contact_sheet_clips, params.contact_sheet_frames)
    return report


def refusals(report: dict, params: CurationParams) -> list[str]:
    """Why a finished run's output must not be used (DVC would cache it): no clip, an empty training
    or validation set, or more failed videos than `curate.max_failed_fraction`; empty when usable."""
    out = []
    videos, split = report["videos"], report["split"]
    failed = videos["skipped"].get("failed", 0)
    if videos["total"] and failed / videos["total"] > params.max_failed_fraction:
        out.append(f"{failed} of {videos['total']} videos failed (more than curate.max_failed_fraction = "
                   f"{params.max_failed_fraction}); their errors are under videos.skipped_files")
    if not report["clips"]["kept"]:
        out.append(f"no clip kept from {videos['total']} videos (skipped: {videos['skipped']}, dropped clips: "
                   f"{report['clips']['dropped']})")
    elif not split["train_clips"]:
        out.append(f"the training set is empty: every kept clip is in a validation video ({split['val_videos']}); "
                   f"lower data.val_fraction (now {split['val_fraction']}) or add videos")
    elif split["val_fraction"] > 0 and not split["val_clips"]:
        out.append(f"the validation set is empty: no video with kept clips drew validation at data.val_fraction = "
                   f"{split['val_fraction']}; raise it, change data.val_seed, or set it to 0")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Curate raw videos into training clips (manifest JSONL + report).")
    parser.add_argument("--raw", default=None,
                        help="a folder of raw videos read at its top level (+ NAME.txt captions, optional NAME.gt.json); "
                             "default: the `data:` section of --params")
    parser.add_argument("--out", required=True, help="output folder (manifest.jsonl, report.json, refs/, masks/, work/)")
    parser.add_argument("--params", default=None, help="YAML params file with a `curate:` section (default: built-in defaults)")
    parser.add_argument("--section", default="curate", help="section of the params file to read")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("pyscenedetect").setLevel(logging.WARNING)  # one INFO line per video otherwise
    params = (params_from_mapping(section(load_params(args.params), args.section, args.params, required=True), args.section)
              if args.params else CurationParams())
    if args.raw is not None:
        source: str | DataParams = args.raw
    elif args.params:
        source = load_section(args.params, "data", DataParams)
    else:
        parser.error("give --raw DIR or --params with a `data:` section")
    try:
        report = curate(source, args.out, params, compute_params(args.params))
    except (OSError, ValueError, ImportError) as err:  # the source or the face stack cannot be set up
        raise SystemExit(f"curation cannot start: {type(err).__name__}: {err}") from None
    except KeyboardInterrupt:  # Ctrl-C: finished videos are saved, a rerun resumes from them
        logger.warning("interrupted: the videos finished so far are kept under %s; run the same command again "
                       "to resume from them", Path(args.out) / "work")
        raise SystemExit(130) from None
    problems = refusals(report, params)
    if problems:
        raise SystemExit("curation output refused: " + "; ".join(problems) + f". See {Path(args.out) / 'report.json'}")
    logger.info("kept %d clips from %d videos; dropped %s; skipped videos %s; %.1f frames/s",
                report["clips"]["kept"], report["videos"]["total"], report["clips"]["dropped"], report["videos"]["skipped"], report["throughput"]["frames_per_second"] or 0.0)


if __name__ == "__main__":
    main()
