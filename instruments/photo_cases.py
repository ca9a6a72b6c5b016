"""Photo cases: a small multi-identity case file from real photos shipped in installed packages
(offline), for smoke tests and for exercising the evaluation before curated data exists.

    python -m instruments.photo_cases --out DIR     # writes DIR/refs/*.png and DIR/bench.jsonl

The photos are the one-person PORTRAITS of `ingredients.data.packaged_photos`: Tom Hanks, the
astronaut's head, Grace Hopper and two people cut from insightface's group photo t1.jpg. The file is
in the case-file format of `ingredients.sampling.benchmark`.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from PIL import Image

from ingredients.data.packaged_photos import PORTRAITS, load_photo
from ingredients.files.atomic import atomic_path
from ingredients.sampling.benchmark import Case, write_benchmark

logger = logging.getLogger(__name__)

DEFAULT_PAIRS = {
    "astronaut_grace": ("astronaut", "grace"),
    "hanks_t1a": ("hanks", "t1_a"),
    "t1b_astronaut": ("t1_b", "astronaut"),
}
PROMPT = "two people talking to each other in a bright room, looking at the camera"


def write_photo_cases(out_dir: str | os.PathLike, pairs: dict[str, tuple[str, ...]] | None = None,
                      seed: int = 0) -> Path:
    """Write the photos used by `pairs` (case id -> PORTRAITS names) to out_dir/refs/ and the cases
    to out_dir/bench.jsonl; returns the JSONL."""
    pairs = pairs or DEFAULT_PAIRS
    refs = Path(out_dir) / "refs"
    refs.mkdir(parents=True, exist_ok=True)
    cases = []
    for i, (case_id, names) in enumerate(pairs.items()):
        unknown = [n for n in names if n not in PORTRAITS]
        if unknown:
            raise KeyError(f"case {case_id!r}: unknown photo(s) {unknown}; available: {sorted(PORTRAITS)}")
        paths = []
        for name in names:
            path = refs / f"{name}.png"
            if not path.exists():
                with atomic_path(path) as tmp:
                    Image.fromarray(load_photo(name)).save(tmp, format="PNG")
            paths.append(path.resolve())
        cases.append(Case(case_id=case_id, prompt=PROMPT, references=tuple(paths), seed=seed + i))
    return write_benchmark(Path(out_dir) / "bench.jsonl", cases)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m instruments.photo_cases", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    logger.info("wrote %s", write_photo_cases(args.out, seed=args.seed))


if __name__ == "__main__":
    main()
