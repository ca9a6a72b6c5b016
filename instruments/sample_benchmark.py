"""A small multi-identity benchmark from real photos shipped in installed packages (offline), for
smoke tests and for exercising the evaluation before curated data exists.

    python -m instruments.sample_benchmark --out DIR     # writes DIR/refs/*.png and DIR/bench.jsonl

Photos: Tom Hanks (insightface), the astronaut Eileen Collins (scikit-image; cropped to her head:
on the full picture the HOG detector also fires on her suit), Grace Hopper (matplotlib), and two
people cut from insightface's group photo t1.jpg.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image

from ingredients.files.atomic import atomic_path
from ingredients.sampling.benchmark import Case, write_benchmark

logger = logging.getLogger(__name__)

DEFAULT_PAIRS = {
    "astronaut_grace": ("astronaut", "grace"),
    "hanks_t1a": ("hanks", "t1_a"),
    "t1b_astronaut": ("t1_b", "astronaut"),
}
PROMPT = "two people talking to each other in a bright room, looking at the camera"


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {name!r} is not installed; it ships the sample photos")
    return Path(list(spec.submodule_search_locations)[0])


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def packaged_photos() -> dict[str, np.ndarray]:
    """Single-person photos by name, uint8 RGB [H, W, 3]."""
    import matplotlib.cbook
    import skimage.data

    images = _package_dir("insightface") / "data" / "images"
    t1 = _read(images / "t1.jpg")
    return {
        "hanks": _read(images / "Tom_Hanks_54745.png"),
        "astronaut": np.ascontiguousarray(skimage.data.astronaut()[0:300, 100:350]),
        "grace": _read(Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))),
        "t1_a": np.ascontiguousarray(t1[180:500, 0:250]),
        "t1_b": np.ascontiguousarray(t1[250:570, 620:940]),
    }


def write_sample_benchmark(out_dir: str | os.PathLike, pairs: dict[str, tuple[str, ...]] | None = None,
                           seed: int = 0) -> Path:
    """Write the photos used by `pairs` to out_dir/refs/ and out_dir/bench.jsonl; returns the JSONL."""
    pairs = pairs or DEFAULT_PAIRS
    photos = packaged_photos()
    refs = Path(out_dir) / "refs"
    refs.mkdir(parents=True, exist_ok=True)
    cases = []
    for i, (case_id, names) in enumerate(pairs.items()):
        unknown = [n for n in names if n not in photos]
        if unknown:
            raise KeyError(f"case {case_id!r}: unknown photo(s) {unknown}; available: {sorted(photos)}")
        paths = []
        for name in names:
            path = refs / f"{name}.png"
            if not path.exists():
                with atomic_path(path) as tmp:
                    Image.fromarray(photos[name]).save(tmp, format="PNG")
            paths.append(path.resolve())
        cases.append(Case(case_id=case_id, prompt=PROMPT, references=tuple(paths), seed=seed + i))
    return write_benchmark(Path(out_dir) / "bench.jsonl", cases)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m instruments.sample_benchmark", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    logger.info("wrote %s", write_sample_benchmark(args.out, seed=args.seed))


if __name__ == "__main__":
    main()
