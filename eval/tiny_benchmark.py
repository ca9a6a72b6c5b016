"""The tiny profile's benchmark: cases built from the identities the tiny data held out of training.

    python -m eval.tiny_benchmark --split data/raw/split.json --params params.yaml --out data/benchmark

Reads `split.json` (written by `ingredients.data.synth`: held-out identity names and their reference
photos), copies the photos into `OUT/refs/` (a benchmark's references stay inside its folder) and
writes `OUT/tiny.jsonl`: one case per subset of 1..`benchmark.max_identities` held-out identities x
prompt, with a deterministic seed per case.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import shutil
from pathlib import Path

from ingredients.sampling.benchmark import Case, write_benchmark
from pydantic import BaseModel, ConfigDict, Field

from ingredients.config import load_params, section, validate_model

logger = logging.getLogger(__name__)


class BenchmarkParams(BaseModel):
    """The tiny benchmark built from held-out identities: one case per identity subset x prompt."""

    model_config = ConfigDict(extra="forbid")
    prompts: list[str] = Field(default_factory=lambda: ["people talking to each other in a bright room"], min_length=1)
    max_identities: int = Field(2, ge=1)
    seed: int = 0


def build_cases(names: list[str], refs: dict[str, Path], params: BenchmarkParams) -> list[Case]:
    """Every identity subset of size 1..max_identities (sorted names) x every prompt."""
    cases = []
    for k in range(1, min(params.max_identities, len(names)) + 1):
        for subset in itertools.combinations(sorted(names), k):
            for p, prompt in enumerate(params.prompts):
                case_id = "-".join(subset) + f"__p{p}"
                cases.append(Case(case_id, prompt, tuple(refs[n] for n in subset), params.seed + len(cases)))
    return cases


def build_tiny_benchmark(split: Path, params: BenchmarkParams, out: Path) -> Path:
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
    path = write_benchmark(out / "tiny.jsonl", build_cases(names, refs, params))
    logger.info("wrote %s from held-out identities %s", path, names)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m eval.tiny_benchmark", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    build_tiny_benchmark(args.split, validate_model(BenchmarkParams, section(load_params(args.params), "benchmark", args.params), "benchmark"), args.out)


if __name__ == "__main__":
    main()
