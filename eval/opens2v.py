"""Import the multi-face cases of OpenS2V-Eval (arXiv 2505.20292) as a benchmark JSONL.

Assumed layout (the Hugging Face dataset `BestWishYsh/OpenS2V-Eval`, fetched with
`hf download --repo-type dataset BestWishYsh/OpenS2V-Eval --local-dir OpenS2V-Eval`):

    OpenS2V-Eval/
      Images/...                  reference images
      Human-Domain_Eval.json      {case_id: {"img_paths": [...], "prompt": str, ...}}
      Open-Domain_Eval.json       same schema (contains the multi-human cases, e.g. multihuman_*)
      Single-Domain_Eval.json     same schema

Each case's `img_paths` are relative to the dataset root and mix people with objects and
backgrounds (e.g. `Images/multihuman/woman/13.jpg`, `Images/multihuman/man/14.jpg`,
`Images/multihuman/object/...`). As in OpenS2V's own face-similarity script, an image is a face
reference when a folder of its path is `man`, `woman`, `crop_man` or `crop_woman`. A case is
imported when it has at least `min_faces` face references; only those become `references`, in the
file's order. Other keys (`synthesis_flag`, `class_label`, ...) are ignored.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from dataclasses import replace
from pathlib import Path

from ingredients.sampling.benchmark import CASE_ID_PATTERN, BenchmarkError, Case, write_benchmark

logger = logging.getLogger(__name__)

FACE_FOLDERS = frozenset({"man", "woman", "crop_man", "crop_woman"})
# the case files with people: multi-human and single-face/single-human cases (Single-Domain_Eval.json
# repeats Human-Domain's kinds; SingleObject_Eval.json has no people)
OPENS2V_FILES = ("Open-Domain_Eval.json", "Human-Domain_Eval.json")


def is_face_reference(img_path: str) -> bool:
    """Whether an OpenS2V image path is a person's face (one of its folders is a FACE_FOLDERS)."""
    return any(part in FACE_FOLDERS for part in Path(img_path).parts[:-1])


def convert_opens2v(cases_json: dict, dataset_root: Path, min_faces: int = 2, seed: int = 0,
                    where: str = "OpenS2V json") -> list[Case]:
    """Turn a decoded OpenS2V-Eval case dict into benchmark cases with >= `min_faces` faces."""
    if not isinstance(cases_json, dict):
        raise BenchmarkError(f"{where}: expected an object {{case_id: case}}, got {type(cases_json).__name__}")
    dataset_root = dataset_root.resolve()
    cases = []
    for case_id, entry in cases_json.items():
        if not isinstance(entry, dict) or "img_paths" not in entry or "prompt" not in entry:
            raise BenchmarkError(f"{where}: case {case_id!r} needs 'img_paths' and 'prompt'")
        if not CASE_ID_PATTERN.match(case_id):
            raise BenchmarkError(f"{where}: case id {case_id!r} is not a plain file name")
        faces = [p for p in entry["img_paths"] if is_face_reference(p)]
        if len(faces) < min_faces:
            continue
        refs = []
        for p in faces:
            if Path(p).is_absolute() or ".." in Path(p).parts:
                raise BenchmarkError(f"{where}: case {case_id!r}: image path {p!r} must be relative to the dataset root")
            ref = (dataset_root / p).resolve()
            if not ref.is_file():
                raise BenchmarkError(f"{where}: case {case_id!r}: image not found: {ref}")
            refs.append(ref)
        cases.append(Case(case_id=case_id, prompt=str(entry["prompt"]), references=tuple(refs), seed=seed))
    return cases


def import_opens2v(dataset_root: str | os.PathLike, out_path: str | os.PathLike,
                   json_names: tuple[str, ...] = OPENS2V_FILES,
                   min_faces: int = 2, seed: int = 0) -> list[Case]:
    """Read the named case files under `dataset_root`, keep multi-face cases, write `out_path`.

    A case id found in several files is imported once when the cases are the same (prompt and
    references), and under distinct ids when they differ: the later one as `ID__FILESTEM`; both kinds
    are counted in the log. Reference paths in the output are absolute unless `out_path` lies at or
    above the dataset root.
    """
    root = Path(dataset_root)
    merged: dict[str, Case] = {}
    same, differing = 0, []
    for name in json_names:
        path = root / name
        if not path.is_file():
            raise FileNotFoundError(
                f"OpenS2V-Eval case file not found: {path}; download the dataset with "
                "`hf download --repo-type dataset BestWishYsh/OpenS2V-Eval --local-dir <root>`"
            )
        try:
            with path.open(encoding="utf-8") as f:
                data = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise BenchmarkError(f"{path}: not a readable JSON file ({err}); download the case file again") from None
        for case in convert_opens2v(data, root, min_faces=min_faces, seed=seed, where=str(path)):
            first = merged.get(case.case_id)
            if first is None:
                merged[case.case_id] = case
            elif (first.prompt, first.references) == (case.prompt, case.references):
                same += 1
            else:  # one id, two different cases: keep both
                renamed = replace(case, case_id=f"{case.case_id}__{Path(name).stem}")
                merged[renamed.case_id] = renamed
                differing.append(f"{case.case_id} -> {renamed.case_id}")
    if same or differing:
        logger.warning("OpenS2V-Eval case ids in several case files: %d identical (imported once), %d different "
                       "(kept under distinct ids: %s)", same, len(differing), ", ".join(differing[:5]) + (" ..." if len(differing) > 5 else ""))
    cases = list(merged.values())
    if not cases:
        raise BenchmarkError(f"{root}: no case with at least {min_faces} face references in {list(json_names)}")
    write_benchmark(out_path, cases)
    logger.info("imported %d OpenS2V-Eval cases with >= %d faces into %s", len(cases), min_faces, out_path)
    return cases


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="OpenS2V-Eval dataset folder")
    parser.add_argument("--out", required=True, help="benchmark JSONL to write")
    parser.add_argument("--json", nargs="+", default=list(OPENS2V_FILES))
    parser.add_argument("--min-faces", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    import_opens2v(args.root, args.out, tuple(args.json), args.min_faces, args.seed)


if __name__ == "__main__":
    main()
