"""HTML report of one evaluation: a metrics table per method (overall, then per identity count K),
a bar chart per metric, and frame strips per case (methods side by side, detected faces boxed and
labelled with the identity they were matched to and the similarity). Self-contained HTML with the
PNGs beside it.

    python -m eval.report --eval DIR [--out DIR/report] [--columns 6] [--max-cases 12] [--profile tiny|full]

`--profile` is the params profile the evaluated videos come from (`prepare.profile`): on `tiny` a
banner above the tables says what that profile can and cannot show.
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import os
import re
from collections import Counter
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # the object API renders with Agg, no pyplot state
from matplotlib.patches import Rectangle

from ingredients.files.atomic import atomic_path, write_text
from ingredients.sampling.benchmark import Case, read_benchmark
from ingredients.faces.image_io import load_rgb
from eval.aggregate import split_by_k
from eval.plan_section import plan_section
from eval.leaderboard import leaderboard_csv
from eval.params import params_from_dict
from eval.run_layout import RunLayout, load_faces, read_records
from ingredients.files.video_io import read_video

logger = logging.getLogger(__name__)

ID_COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4")
UNMATCHED = "#bbbbbb"


def safe_name(metric: str) -> str:
    """A metric name as a file-name fragment ('face_sim/dlib' -> 'face_sim__dlib')."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", metric.replace("/", "__"))


def _save(fig: Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def bar_chart(path: Path, metric: str, values: dict[str, float]) -> Path:
    """One bar per method for `metric`."""
    methods = sorted(values)
    fig = Figure(figsize=(max(3.0, 0.9 * len(methods) + 1.5), 2.6), dpi=90)
    ax = fig.subplots()
    bars = ax.bar(methods, [values[m] for m in methods], color=[ID_COLOURS[i % len(ID_COLOURS)] for i in range(len(methods))])
    ax.bar_label(bars, fmt="%.3g", fontsize=8)
    ax.set_title(metric, fontsize=10)
    ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    ax.margins(y=0.15)
    fig.tight_layout()
    _save(fig, path)
    return path


def _draw_faces(ax, faces, t: int) -> None:
    """Boxes of analysed frame t, coloured and labelled by matched identity."""
    match = faces.matches[t]
    ref_of_face = match.ref_of_face
    for j, box in enumerate(faces.frame_boxes(t)):
        k = int(ref_of_face[j])
        colour = ID_COLOURS[k % len(ID_COLOURS)] if k >= 0 else UNMATCHED
        label = f"id{k} {match.score[k]:.2f}" if k >= 0 else "?"
        x0, y0, x1, y1 = (float(v) for v in box)
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=colour, linewidth=1.5))
        ax.text(x0, y0 - 2, label, color="white", fontsize=6, backgroundcolor=colour, va="bottom")


def case_strip(path: Path, case: Case, methods: dict[str, Path], layout: RunLayout, backend: str | None,
                max_frames: int | None, stride: int, n_columns: int = 6) -> Path:
    """Grid PNG: the references on the first row, then one row per method with `n_columns` frames
    spread over the analysed frames, faces boxed by identity (backend's analysis, if stored)."""
    rows = 1 + len(methods)
    fig = Figure(figsize=(1.6 * n_columns, 1.7 * rows), dpi=90)
    axes = fig.subplots(rows, n_columns, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for k, ref in enumerate(case.references[:n_columns]):
        axes[0, k].imshow(load_rgb(ref))
        axes[0, k].set_title(f"id{k}", color=ID_COLOURS[k % len(ID_COLOURS)], fontsize=8)
    for r, (method, folder) in enumerate(sorted(methods.items()), start=1):
        if not (folder / f"{case.case_id}.mp4").is_file():  # declared absent (absent.json), e.g. no ground truth
            axes[r, 0].text(0.0, 0.5, f"{method}: no video", transform=axes[r, 0].transAxes, fontsize=8)
            continue
        video, _fps = read_video(folder / f"{case.case_id}.mp4", 0, max_frames)
        faces = load_faces(layout.cache_faces(method, case.case_id)).get(backend) if backend else None
        n_analysed = faces.n_frames if faces is not None else len(range(0, len(video), stride))
        picks = np.unique(np.linspace(0, n_analysed - 1, n_columns).round().astype(int))
        for c, t in enumerate(picks):
            ax = axes[r, c]
            ax.imshow(video[min(t * stride, len(video) - 1)])
            if faces is not None:
                _draw_faces(ax, faces, int(t))
            ax.set_title(f"t={t * stride}", fontsize=7)
        axes[r, 0].text(-0.08, 0.5, method, transform=axes[r, 0].transAxes, rotation=90,
                        ha="right", va="center", fontsize=8)
    fig.suptitle(f"{case.case_id}: {case.prompt[:90]}", fontsize=9)
    fig.tight_layout()
    _save(fig, path)
    return path


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def _cells(names: list[str], values: dict, missing: dict) -> str:
    """One row's cells; a missing cell shows the reason on hover, a partial one its note."""
    cells = []
    for n in names:
        if n in values:
            note = missing.get(n)
            mark = f' title="{html.escape(note)}" class="partial"' if note else ""
            cells.append(f"<td{mark}>{_fmt(values[n])}</td>")
        else:
            reason = missing.get(n, "not computed")
            cells.append(f'<td class="missing" title="{html.escape(reason)}">missing</td>')
    return "".join(cells)


def metrics_table(metrics: dict, missing: dict) -> str:
    """HTML table of the overall aggregates, one row per method, one column per metric."""
    overall = {m: split_by_k(v)[0] for m, v in metrics.items()}
    gaps = {m: split_by_k(v)[0] for m, v in missing.items()}
    names = sorted({n for m in overall.values() for n in m} | {n for m in gaps.values() for n in m})
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    rows = [f"<tr><th>{html.escape(method)}</th>{_cells(names, overall.get(method, {}), gaps.get(method, {}))}</tr>"
            for method in sorted(set(overall) | set(gaps))]
    return f'<table class="metrics"><tr><th>method</th>{head}</tr>{"".join(rows)}</table>'


def by_k_table(metrics: dict, missing: dict) -> str:
    """HTML table of the aggregates per identity count K: one row per (K, method); '' when no K is known."""
    values = {m: split_by_k(v)[1] for m, v in metrics.items()}
    gaps = {m: split_by_k(v)[1] for m, v in missing.items()}
    ks = sorted({k for d in values.values() for k in d}, key=int)
    if not ks:
        return ""
    names = sorted({n for d in values.values() for v in d.values() for n in v}
                   | {n for d in gaps.values() for v in d.values() for n in v})
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    rows = [f"<tr><th>{html.escape(k)}</th><th>{html.escape(method)}</th>"
            f"{_cells(names, values[method].get(k, {}), gaps.get(method, {}).get(k, {}))}</tr>"
            for k in ks for method in sorted(values) if k in values[method]]
    return f'<table class="metrics by-k"><tr><th>K</th><th>method</th>{head}</tr>{"".join(rows)}</table>'


PROFILES = ("tiny", "full")

TINY_BANNER = (
    "<div class='banner'><b>Tiny profile: the generated videos are noise by design.</b> The tiny VAE "
    "does not carry a recognisable face through its own encode and decode: {vae_row} So no generated "
    "method here can render a recognisable face, and its identity metrics (face_sim, face_found, "
    "id_confusion, fid_face, ...) say nothing about the method. What this profile does show: the "
    "<b>oracle</b> row proves the metrics (the reference faces pasted into a video score near 1), and "
    "<b>routing accuracy on held-out clips</b>, measured by the training stage (routing_acc in stage 2's "
    "val_log.csv beside its majority-class and chance baselines, the DVC plot 'routing accuracy (held-out "
    "clips)'), shows the router learning. Identity in generated video is a GPU-scale result: run the full "
    "profile.</div>"
)
VAE_ROUNDTRIP = "vae_roundtrip"


def vae_row_sentence(metrics: dict | None, missing: dict | None, backend: str | None) -> str:
    """The measured sentence behind the tiny banner: the vae_roundtrip row's face scores (ground-truth
    clips through the model's VAE) beside the oracle's, or why there is none."""
    if not metrics or VAE_ROUNDTRIP not in metrics or not backend:
        return ("no vae_roundtrip row was evaluated here (it needs benchmark cases with a ground-truth clip), "
                "so this is not measured in this report.")
    row, _ = split_by_k(metrics[VAE_ROUNDTRIP])
    gaps, _ = split_by_k((missing or {}).get(VAE_ROUNDTRIP, {}))
    parts = []
    for name in (f"face_sim/{backend}", f"face_found/{backend}"):
        if name in row:
            oracle = split_by_k(metrics.get("oracle", {}))[0].get(name)
            parts.append(f"{name} {row[name]:.3f}" + (f" (oracle {oracle:.3f})" if oracle is not None else ""))
        elif name in gaps:
            parts.append(f"{name} missing ({gaps[name]})")
    note = gaps.get(f"face_sim/{backend}", "")
    return (f"the <b>vae_roundtrip</b> row (real clips of the cases' people through the model's own VAE at the "
            f"sampling size) measures it: {html.escape('; '.join(parts) or 'no face score')}."
            + (f" ({html.escape(note)})" if note and f"face_sim/{backend}" in row else ""))


def banner(profile: str | None, metrics: dict | None = None, missing: dict | None = None,
           backend: str | None = None) -> str:
    """What the profile can show, above the tables: the tiny profile's banner (citing the vae_roundtrip
    row of `metrics`), none for full (or unknown)."""
    if profile is not None and profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    return TINY_BANNER.format(vae_row=vae_row_sentence(metrics, missing, backend)) if profile == "tiny" else ""


CSS = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table.metrics { border-collapse: collapse; font-size: 12px; }
table.metrics td, table.metrics th { border: 1px solid #ccc; padding: 3px 6px; text-align: right; }
td.missing { color: #999; background: #f4f4f4; } td.partial { background: #fff6d5; }
.bars img { margin: 4px; border: 1px solid #eee; } .strip img { max-width: 100%; border: 1px solid #eee; }
li { font-size: 12px; } div.scroll { overflow-x: auto; }
div.banner { background: #fff3cd; border: 2px solid #e0a800; padding: 0.8em 1em; margin: 1em 0; max-width: 75em; }
"""


def loss_curves(path: Path, logs: dict[str, Path]) -> Path:
    """One panel per training log (CSV with a `step` column): every loss column against the step."""
    import csv

    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(logs), figsize=(5 * len(logs), 3.2), squeeze=False)
    for ax, (name, log) in zip(axes[0], logs.items()):
        with open(log, encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        steps = [int(r["step"]) for r in rows]
        for column in [c for c in (rows[0].keys() if rows else []) if c.endswith("loss") or c == "routing_acc"]:
            values = [float(r[column]) for r in rows if r[column] not in ("", None)]
            if values and any(v != 0 for v in values):
                ax.plot(steps[: len(values)], values, label=column)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    _save(fig, path)
    return path


def training_section(out: Path, train_logs: dict[str, Path], images: list[Path]) -> list[str]:
    """HTML for the loss curves and the training stages' validation images (frame strips, routing maps)."""
    import shutil

    parts = []
    logs = {name: log for name, log in train_logs.items() if Path(log).is_file()}
    if logs:
        png = loss_curves(out / "training_losses.png", logs)
        parts += ["<h2>Training</h2>", f"<img src='{png.name}' alt='training losses'>"]
    if images:
        parts.append("<h3>Validation samples and routing maps (argmax identity per token over the frames)</h3>")
        for image in images:
            dst = out / f"train_{image.parent.parent.name}_{image.name}"
            shutil.copyfile(image, dst)
            parts.append(f"<div class='strip'><p>{html.escape(image.parent.parent.name)}: {html.escape(image.name)}</p>"
                         f"<img src='{dst.name}' alt='{html.escape(image.name)}'></div>")
    return parts


ROUTING_COLUMNS = ("routing_acc", "routing_acc_majority", "routing_acc_chance")


def routing_section(val_logs: dict[str, Path]) -> list[str]:
    """Routing accuracy of each stage's last validation that measured it, beside its majority-class and
    chance baselines on the same clips (the training stage's val_log.csv)."""
    import csv

    rows = []
    for name, log in sorted(val_logs.items()):
        if not Path(log).is_file():
            continue
        with open(log, newline="", encoding="utf-8") as f:
            measured = [r for r in csv.DictReader(f) if r.get("routing_acc")]
        if measured:
            last = measured[-1]
            cells = "".join(f"<td>{_fmt(float(last[c]))}</td>" if last.get(c) else "<td class='missing'>missing</td>"
                            for c in ROUTING_COLUMNS)
            rows.append(f"<tr><td>{html.escape(name)}</td><td>{html.escape(last.get('split', ''))}</td>"
                        f"<td>{html.escape(last['step'])}</td>{cells}</tr>")
    if not rows:
        return []
    head = "".join(f"<th>{c}</th>" for c in ROUTING_COLUMNS)
    return ["<h2>Routing accuracy on the validation clips</h2>",
            "<p>The router's argmax against the identity masks, beside always answering the most frequent "
            "identity (majority) and a uniform guess among the clip's K identities (chance), on the same tokens.</p>",
            f"<table class='metrics'><tr><th>stage</th><th>clips</th><th>step</th>{head}</tr>{''.join(rows)}</table>"]


def copy_paste_plot(path: Path, metrics: dict, backend: str) -> Path | None:
    """Scatter of face_sim against copy_paste, one point per method (overall means); None when no
    method has both. The trade-off: a high face_sim reached by copying the photo sits on the right."""
    x_name, y_name = f"copy_paste/{backend}", f"face_sim/{backend}"
    points = {m: (v[x_name], v[y_name]) for m, e in metrics.items() if x_name in (v := split_by_k(e)[0]) and y_name in v}
    if not points:
        return None
    fig = Figure(figsize=(5.5, 4.5))
    ax = fig.add_subplot()
    for method, (x, y) in sorted(points.items()):
        ax.scatter([x], [y])
        ax.annotate(method, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.axvline(0.0, color="grey", lw=0.5)
    ax.set_xlim(-1.2, 1.2)
    ax.set_xlabel(f"{x_name}  (-1: matches other photos of the person, +1: copies the reference)")
    ax.set_ylabel(y_name)
    ax.set_title("identity similarity vs copy-paste")
    _save(fig, path)
    return path


def comparability_section(out: Path, metrics: dict, backend: str | None) -> list[str]:
    """face_sim vs copy_paste per method, and the OpenS2V-Eval leaderboard CSV (eval/leaderboard.py)."""
    if not backend:
        return []
    parts = ["<h2>Copy-paste and leaderboard comparability</h2>"]
    png = copy_paste_plot(out / "face_sim_vs_copy_paste.png", metrics, backend)
    if png is not None:
        parts.append(f"<img src='{png.name}' alt='face_sim against copy_paste per method'>")
    else:
        parts.append("<p>No method has both face_sim and copy_paste (copy_paste needs benchmark targets).</p>")
    csv_path = out / "opens2v_leaderboard.csv"
    write_text(csv_path, leaderboard_csv(metrics, backend))
    parts.append(f"<p><a href='{csv_path.name}'>{csv_path.name}</a>: the OpenS2V-Eval leaderboard's columns; only "
                 "FaceSim is filled, in OpenS2V's aggregation (face_sim_opens2v/&lt;R&gt;/faceless_as_0: a faceless "
                 "video counts 0), beside our face_sim_opens2v (faceless missing) in the tables above.</p>")
    return parts


def curation_section(curation_report: str | os.PathLike | None) -> list[str]:
    """The raw videos that gave no training clip, each with why (curation's report.json
    `videos.outcomes`): a video the study silently lost would otherwise show only in a count."""
    if curation_report is None or not Path(curation_report).is_file():
        return []
    videos = json.loads(Path(curation_report).read_text(encoding="utf-8"))["videos"]
    nothing = {v: o for v, o in videos.get("outcomes", {}).items() if not o["clips"]}
    reasons = Counter(o["why"] for o in nothing.values())
    counted = ", ".join(f"{html.escape(why)} {n}" for why, n in sorted(reasons.items()))
    parts = [f"<h2>Curation: videos that gave no clip</h2><p>{len(nothing)} of {videos['total']} videos "
             f"(<code>{html.escape(str(curation_report))}</code>){': ' + counted if counted else ''}.</p>"]
    if nothing:
        parts.append("<ul>")
        parts += [f"<li><b>{html.escape(v)}</b>: {html.escape(o['why'])}: {html.escape(o.get('message') or '')}</li>"
                  for v, o in sorted(nothing.items())]
        parts.append("</ul>")
    return parts


def render_report(eval_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                  benchmark: str | os.PathLike | None = None, methods: dict[str, Path] | None = None,
                  n_columns: int = 6, max_cases: int | None = 12, train_logs: dict[str, Path] | None = None,
                  train_images: list[Path] | None = None, profile: str | None = None,
                  val_logs: dict[str, Path] | None = None, plan: str | os.PathLike | None = None,
                  curation: str | os.PathLike | None = None) -> Path:
    """Write `out_dir/index.html` (default eval_dir/report) and its PNGs; returns the HTML path.

    The benchmark and method folders default to the run's sources.json. `profile` ('tiny' or
    'full', the params profile of the videos): 'tiny' puts the banner above the tables.
    """
    banner(profile)  # a bad profile fails before any file is written
    layout = RunLayout(Path(eval_dir))
    out = Path(out_dir) if out_dir is not None else layout.root / "report"
    out.mkdir(parents=True, exist_ok=True)
    metrics = json.loads(layout.metrics.read_text(encoding="utf-8"))
    missing = json.loads(layout.missing.read_text(encoding="utf-8")) if layout.missing.is_file() else {}
    params = params_from_dict(json.loads(layout.params.read_text(encoding="utf-8"))["eval"])
    if benchmark is None or methods is None:
        if not layout.sources.is_file():
            raise FileNotFoundError(f"{layout.sources} not found; pass benchmark= and methods= explicitly")
        sources = json.loads(layout.sources.read_text(encoding="utf-8"))
        benchmark = benchmark or sources["benchmark"]
        methods = methods or {m: Path(f) for m, f in sources["methods"].items()}
    records = read_records(layout.per_video)
    evaluated = {r["case_id"] for r in records}
    cases = [c for c in read_benchmark(benchmark) if c.case_id in evaluated][:max_cases]
    backend = params.face_backends[0] if params.face_backends else None
    top = banner(profile, metrics, missing, backend)

    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Evaluation {html.escape(layout.root.name)}</title>",
             f"<style>{CSS}</style></head><body>",
             f"<h1>Evaluation: {html.escape(str(layout.root))}</h1>",
             top,
             f"<p>{len(records)} videos: {len(methods)} methods x {len(evaluated)} cases; benchmark "
             f"<code>{html.escape(str(benchmark))}</code>; face backends {', '.join(params.face_backends)}.</p>",
             "<h2>Metrics</h2><div class='scroll'>", metrics_table(metrics, missing), "</div>"]
    per_k = by_k_table(metrics, missing)
    if per_k:
        parts += ["<h3>By identity count K (number of references of the case)</h3><div class='scroll'>", per_k, "</div>"]
    parts.append("<h2>Per metric</h2><div class='bars'>")
    overall = {m: split_by_k(v)[0] for m, v in metrics.items()}
    names = sorted({n for m in overall.values() for n in m})
    for name in names:
        values = {m: v[name] for m, v in overall.items() if name in v}
        png = bar_chart(out / f"bars_{safe_name(name)}.png", name, values)
        parts.append(f"<img src='{png.name}' alt='{html.escape(name)}'>")
    parts.append("</div><h2>Frame strips</h2>")
    if backend:
        parts.append(f"<p>Boxes: faces found by <b>{html.escape(backend)}</b>, coloured by the reference they were "
                     "matched to one-to-one (label: identity and cosine similarity); grey '?' = unmatched.</p>")
    for case in cases:
        png = case_strip(out / f"strip_{safe_name(case.case_id)}.png", case, methods, layout, backend,
                          params.max_frames, params.face_frame_stride, n_columns)
        parts.append(f"<div class='strip'><h3>{html.escape(case.case_id)}</h3><img src='{png.name}' "
                     f"alt='frames of {html.escape(case.case_id)}'></div>")
    parts += comparability_section(out, metrics, backend)
    parts += routing_section(val_logs or {})
    parts += training_section(out, train_logs or {}, list(train_images or []))
    parts += plan_section(plan)  # the plan stage's JSON: what the study costs on GPUs
    parts += curation_section(curation)  # curation's report.json: videos that gave no clip
    gaps = []
    for m, d in sorted(missing.items()):
        overall_gaps, k_gaps = split_by_k(d)
        gaps += [(m, n, r) for n, r in sorted(overall_gaps.items())]
        gaps += [(m, f"{n} (K={k})", r) for k in sorted(k_gaps, key=int) for n, r in sorted(k_gaps[k].items())]
    if gaps:
        parts.append("<h2>Missing or partial metrics</h2><ul>")
        parts += [f"<li><b>{html.escape(m)}</b> {html.escape(n)}: {html.escape(r)}</li>" for m, n, r in gaps]
        parts.append("</ul>")
    parts.append("</body></html>")
    index = out / "index.html"
    write_text(index, "\n".join(parts))
    logger.info("report written to %s", index)
    return index


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m eval.report", description=__doc__.splitlines()[0])
    parser.add_argument("--eval", required=True, help="evaluation run folder (eval.run --out)")
    parser.add_argument("--out", default=None, help="report folder (default: <eval>/report)")
    parser.add_argument("--columns", type=int, default=6)
    parser.add_argument("--max-cases", type=int, default=12)
    parser.add_argument("--train-log", action="append", default=[], metavar="NAME=CSV",
                        help="a training stage's train_log.csv to plot (repeatable)")
    parser.add_argument("--val-log", action="append", default=[], metavar="NAME=CSV",
                        help="a training stage's val_log.csv: its routing accuracy and baselines (repeatable)")
    parser.add_argument("--train-validation", action="append", default=[], metavar="DIR",
                        help="a training stage's validation folder: its last sample strip and routing map are shown")
    parser.add_argument("--profile", choices=PROFILES, default=None,
                        help="params profile of the evaluated videos (prepare.profile); tiny adds the banner saying "
                             "what that profile can show")
    parser.add_argument("--plan", default=None, help="the plan stage's plan.json: a section on what the study costs")
    parser.add_argument("--curation", default=None, help="curation's report.json: a section listing the videos that gave no clip")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    logs = dict(spec.split("=", 1) for spec in args.train_log)
    images = []
    for folder in map(Path, args.train_validation):
        for kind in ("sample", "routing"):
            found = sorted(folder.glob(f"*_{kind}.png"))
            images += found[-1:]
    render_report(args.eval, args.out, n_columns=args.columns, max_cases=args.max_cases,
                  train_logs={k: Path(v) for k, v in logs.items()}, train_images=images, profile=args.profile,
                  val_logs={k: Path(v) for k, v in (spec.split("=", 1) for spec in args.val_log)}, plan=args.plan,
                  curation=args.curation)


if __name__ == "__main__":
    main()
