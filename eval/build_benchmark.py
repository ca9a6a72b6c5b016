"""The benchmark stage: `python -m eval.build_benchmark --params params.yaml --out data/benchmark`.

Whatever the source, it writes one file, `OUT/benchmark.jsonl` (the format of
`ingredients.sampling.benchmark`), which sampling, the oracle and the evaluation read. The `benchmark:`
section of params picks the source:
- `tiny`: cases built from the identities the tiny data held out of training (`path`: the synth
  output folder with its `split.json`; see `eval.tiny_benchmark`);
- `jsonl`: any benchmark file in our format (`path`: the file; its references stay where they are);
- `opens2v`: the OpenS2V-Eval folder (`path`), through `eval.opens2v`: its multi-human cases and,
  with `opens2v.min_faces: 1`, its single-face cases as K = 1.
Every case must fit the model: a case with more references than `max_identities` is refused with an
error naming the case (the sampling stage checks the model's own limit again).
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from eval.opens2v import OPENS2V_FILES, import_opens2v
from eval.tiny_benchmark import build_tiny_benchmark
from ingredients.config import load_section, stage_parser
from ingredients.sampling.benchmark import BenchmarkError, check_identity_counts, read_benchmark, write_benchmark

logger = logging.getLogger(__name__)

BENCHMARK_FILE = "benchmark.jsonl"


class OpenS2VParams(BaseModel):
    """Which OpenS2V-Eval case files to read and the fewest face references a case needs."""

    model_config = ConfigDict(extra="forbid")
    files: list[str] = Field(default_factory=lambda: list(OPENS2V_FILES), min_length=1)
    min_faces: int = Field(1, ge=1)


class BenchmarkParams(BaseModel):
    """The `benchmark:` section. `prompts` and `seed` build the tiny cases; `max_identities` bounds
    every source (the tiny one builds subsets up to it; other sources refuse larger cases)."""

    model_config = ConfigDict(extra="forbid")
    source: Literal["tiny", "jsonl", "opens2v"] = "tiny"
    path: str = "data/raw"
    prompts: list[str] = Field(default_factory=lambda: ["people talking to each other in a bright room"], min_length=1)
    max_identities: int = Field(2, ge=1)
    seed: int = 0
    opens2v: OpenS2VParams = Field(default_factory=OpenS2VParams)


def check_references_are_images(cases, where: str) -> None:
    """Refuse a reference file that is not an image (here, not later in the oracle or in sampling)."""
    from PIL import Image, UnidentifiedImageError

    for case in cases:
        for ref in case.references:
            try:
                with Image.open(ref) as image:
                    image.verify()
            except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
                raise BenchmarkError(f"{where}: case {case.case_id!r}: reference {ref} is not an image "
                                     f"({type(err).__name__}: {err}); replace it with a PNG or JPEG photo") from None


def build_benchmark(params: BenchmarkParams, out: Path) -> Path:
    """Write OUT/benchmark.jsonl from the configured source; returns its path."""
    source = Path(params.path)
    target = out / BENCHMARK_FILE
    if params.source == "tiny":
        build_tiny_benchmark(source / "split.json", params.prompts, params.max_identities, params.seed, out, target)
    elif params.source == "jsonl":
        write_benchmark(target, read_benchmark(source))
    else:
        import_opens2v(source, target, tuple(params.opens2v.files), params.opens2v.min_faces, params.seed)
    cases = read_benchmark(target)
    check_identity_counts(cases, params.max_identities, f"benchmark.path {params.path}", "benchmark.max_identities")
    check_references_are_images(cases, f"benchmark.path {params.path}")
    counts = Counter(len(c.references) for c in cases)
    logger.info("benchmark %s: %d cases from %s %s; cases per K: %s", target, len(cases), params.source, params.path,
                dict(sorted(counts.items())))
    return target


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("eval.build_benchmark", __doc__)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = load_section(args.params, "benchmark", BenchmarkParams)
    try:
        build_benchmark(params, args.out)
    except (BenchmarkError, FileNotFoundError) as err:
        raise SystemExit(str(err)) from None


if __name__ == "__main__":
    main()
