"""Curation throughput on the tiny data: local engine vs Ray with 1 and 2 task slots (videos/s).

    python -m instruments.bench_compute [--videos 4] [--rounds 1]

Each run curates into a fresh folder; Ray runs include starting and stopping the local instance
(reported separately), so `ray overhead per video` = (Ray wall - local wall) / videos.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from ingredients.compute import ComputeParams, ray_session  # noqa: E402
from ingredients.data.curate import curate  # noqa: E402
from ingredients.data.curation_params import CurationParams  # noqa: E402
from ingredients.data.synth import synthesize  # noqa: E402

logger = logging.getLogger("bench_compute")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=4)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    root = Path(tempfile.mkdtemp(prefix="bench_compute_"))
    synthesize(root / "raw", seed=0, indices=list(range(args.videos)))
    rows = {"uptime_before": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()}
    t = time.perf_counter()
    curate(root / "raw", root / "local1", CurationParams())
    rows["local_1"] = time.perf_counter() - t
    t = time.perf_counter()
    curate(root / "raw", root / "local2", CurationParams(num_workers=2))
    rows["local_pool_2"] = time.perf_counter() - t
    for cpus in (1, 2):
        params = ComputeParams(engine="ray", num_cpus=cpus, object_store_mb=100)
        t = time.perf_counter()
        with ray_session(params):
            rows[f"ray_{cpus}_init"] = time.perf_counter() - t
            t1 = time.perf_counter()
            curate(root / "raw", root / f"ray{cpus}", CurationParams(), params)
            rows[f"ray_{cpus}_map"] = time.perf_counter() - t1
        rows[f"ray_{cpus}_total"] = time.perf_counter() - t
    rows["uptime_after"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    rows["videos"] = args.videos
    rows["manifests_equal"] = len({(root / d / "manifest.jsonl").read_bytes() for d in ("local1", "local2", "ray1", "ray2")}) == 1
    print(json.dumps(rows, indent=1))  # noqa: T201 - the script's output


if __name__ == "__main__":
    main()
