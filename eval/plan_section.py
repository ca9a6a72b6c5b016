"""The report's "what this study costs at full size" section, from the plan stage's JSON
(`ingredients plan`, outputs/plan/plan.json): memory per GPU, fits or not, time and GPU-hours per stage."""

from __future__ import annotations

import html
import json
from pathlib import Path


def plan_section(path: str | Path | None) -> list[str]:
    """HTML parts of the section; nothing when no plan is given, a line saying so when the file is missing."""
    if path is None:
        return []
    path = Path(path)
    if not path.is_file():
        return ["<h2>What this study costs at full size</h2>",
                f"<p class='missing'>No plan: {html.escape(str(path))} does not exist (run the plan stage).</p>"]
    plan = json.loads(path.read_text(encoding="utf-8"))
    s = plan["settings"]
    title = "What this study costs at full size" if s.get("profile") == "full" else \
        f"What this study costs on GPUs (profile {html.escape(str(s.get('profile')))}; the full profile's plan: docs/plan.md)"
    rows = []
    for stage, st in plan["stages"].items():
        for name, c in st["configs"].items():
            if c.get("peak_gib") is None:
                rows.append(f"<tr><td>{html.escape(stage)}</td><td>{html.escape(name)}</td>"
                            f"<td colspan='5' class='missing'>{html.escape(c.get('error', ''))}</td></tr>")
                continue
            hours = c.get("gpu_hours")
            gpus = c.get("num_processes", 1)
            fits = "yes" if c["fits"] else "no" + (f": {c['error']}" if c.get("error") else "")
            if c.get("configured"):
                fits += " (configured)"
            rows.append(f"<tr><td>{html.escape(stage)}</td><td>{html.escape(name)}</td><td>{gpus}</td>"
                        f"<td>{c['total_gib']:.1f}</td><td>{html.escape(fits)}</td>"
                        f"<td>{'' if hours is None else f'{hours:.1f}'}</td></tr>")
    return [f"<h2>{title}</h2>",
            f"<p>From the plan stage (<code>{html.escape(str(path))}</code>): one fake step of each stage on CPU, "
            f"no weights. Memory per GPU with the allowance ({html.escape(s['allowance'])}) against "
            f"{s['gpu_memory_gib']:g} GiB; time at {s['mfu']:.0%} MFU of {s['gpu_peak_tflops']:g} TFLOP/s; "
            f"sampling GPU-hours for {plan['stages'].get('sample', {}).get('cases', '?')} cases of every method.</p>",
            "<div class='scroll'><table class='metrics'><tr><th>stage</th><th>config</th><th>GPUs</th>"
            "<th>GiB per GPU</th><th>fits</th><th>GPU-hours</th></tr>", *rows, "</table></div>"]
