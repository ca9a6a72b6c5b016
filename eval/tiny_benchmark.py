"""The tiny profile's benchmark: cases built from the identities the tiny data held out of training
(the `tiny` source of the benchmark stage, `python -m eval.build_benchmark`).

Reads `split.json` (written by `ingredients.data.synth`: held-out identity names and their reference
photos), copies the photos into `OUT/refs/` (a benchmark's references stay inside its folder) and
writes `OUT/tiny.jsonl`: one case per subset of 1..`benchmark.max_identities` held-out identities x
prompt, with a deterministic seed per case.
"""

from __future__ import annotations

import itertools
import json
import logging
import shutil
from pathlib import Path

from ingredients.sampling.benchmark import Case, write_benchmark

logger = logging.getLogger(__name__)


def build_cases(names: list[str], refs: dict[str, Path], prompts: list[str], max_identities: int, seed: int) -> list[Case]:
    """Every identity subset of size 1..max_identities (sorted names) x every prompt."""
    cases = []
    for k in range(1, min(max_identities, len(names)) + 1):
        for subset in itertools.combinations(sorted(names), k):
            for p, prompt in enumerate(prompts):
                case_id = "-".join(subset) + f"__p{p}"
                cases.append(Case(case_id, prompt, tuple(refs[n] for n in subset), seed + len(cases)))
    return cases


def build_tiny_benchmark(split: Path, prompts: list[str], max_identities: int, seed: int, out: Path,
                         target: Path | None = None) -> Path:
    """Copy the held-out reference photos into OUT/refs and write the cases to `target`
    (default OUT/tiny.jsonl)."""
    data = json.loads(split.read_text())
    names = list(data["heldout_identities"])
    if not names:
        raise ValueError(f"{split}: no held-out identities (set synth.num_heldout >= 1)")
    refs = {}
    for name in names:
        src = split.parent / data["heldout_references"][name]
        if not src.is_file():
            raise FileNotFoundError(f"{src}: reference photo of held-out identity {name!r} is missing (named in {split})")
        dst = out / "refs" / src.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        refs[name] = dst.resolve()
    path = write_benchmark(target or out / "tiny.jsonl", build_cases(names, refs, prompts, max_identities, seed))
    logger.info("wrote %s from held-out identities %s", path, names)
    return path
