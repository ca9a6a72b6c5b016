"""Benchmarks: a JSONL file, one case per line.

Each line is `{"case_id": str, "prompt": str, "references": [image path, ...], "seed": int}`, with
an optional `"targets": [[image path, ...], ...]`: per identity (in reference order), other photos of
the same person than its reference (the copy-paste metric's targets; an identity may have none, and a
case without the key has none), and an optional `"ground_truth": video path`: a real clip of exactly
these people (the `vae_roundtrip` baseline's input). Reference, target and ground-truth paths are relative to the benchmark file's folder (or absolute); a relative path may not
leave that folder (`../` is refused) so a benchmark cannot read files outside its own tree.
`case_id` names the method's output video `{case_id}.mp4`, so it must be a plain file name.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ingredients.files.atomic import write_jsonl
from ingredients.files.jsonl import jsonl_lines

CASE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
REQUIRED_KEYS = ("case_id", "prompt", "references", "seed")
OPTIONAL_KEYS = ("targets", "ground_truth")


class BenchmarkError(ValueError):
    """A malformed benchmark file; the message names the file and line."""


@dataclass(frozen=True)
class Case:
    """One benchmark case. `references` are resolved absolute paths, in identity order; `targets`:
    () or, per identity, a tuple of other photos of that person (resolved paths, maybe empty);
    `ground_truth`: a real video of these people, or None."""

    case_id: str
    prompt: str
    references: tuple[Path, ...]
    seed: int
    targets: tuple[tuple[Path, ...], ...] = ()
    ground_truth: Path | None = None

    def to_json(self, root: Path | None = None) -> dict:
        """The case as a JSON line; paths relative to `root` when given and inside it."""
        def rel(path: Path) -> str:
            return path.relative_to(root).as_posix() if root is not None and path.is_relative_to(root) else str(path)

        out = {"case_id": self.case_id, "prompt": self.prompt, "references": [rel(r) for r in self.references],
               "seed": self.seed}
        if self.targets:
            out["targets"] = [[rel(t) for t in per_id] for per_id in self.targets]
        if self.ground_truth is not None:
            out["ground_truth"] = rel(self.ground_truth)
        return out


def _resolve_reference(root: Path, raw: object, where: str) -> Path:
    if not isinstance(raw, str) or not raw:
        raise BenchmarkError(f"{where}: each reference must be a non-empty path string, got {raw!r}")
    ref = Path(raw)
    if ref.is_absolute():
        resolved = ref.resolve()
    else:
        if ".." in ref.parts:
            raise BenchmarkError(
                f"{where}: reference {raw!r} uses '..'; relative references must stay inside "
                f"the benchmark's folder {root} (move the image there or give an absolute path)"
            )
        resolved = (root / ref).resolve()
        if not resolved.is_relative_to(root):
            raise BenchmarkError(
                f"{where}: reference {raw!r} resolves to {resolved}, outside the benchmark's "
                f"folder {root} (a symlink?); give an absolute path instead"
            )
    if not resolved.is_file():
        raise BenchmarkError(f"{where}: reference image not found: {resolved}")
    return resolved


def parse_case(obj: object, root: Path, where: str) -> Case:
    """Validate one decoded JSON line into a `Case`; `where` prefixes error messages."""
    if not isinstance(obj, dict):
        raise BenchmarkError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in obj]
    if missing:
        raise BenchmarkError(f"{where}: missing key(s) {missing}; each line needs {list(REQUIRED_KEYS)}")
    unknown = sorted(set(obj) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    if unknown:
        raise BenchmarkError(f"{where}: unknown key(s) {unknown}; allowed: {list(REQUIRED_KEYS + OPTIONAL_KEYS)}")
    case_id, prompt, refs, seed = (obj[k] for k in REQUIRED_KEYS)
    if not isinstance(case_id, str) or not CASE_ID_PATTERN.match(case_id):
        raise BenchmarkError(
            f"{where}: case_id {case_id!r} must be a string of letters, digits, '.', '_' or '-' "
            f"(it names the output file {{case_id}}.mp4)"
        )
    if not isinstance(prompt, str):
        raise BenchmarkError(f"{where}: prompt must be a string, got {type(prompt).__name__}")
    if not isinstance(refs, list) or not refs:
        raise BenchmarkError(f"{where}: references must be a non-empty list of image paths, got {refs!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise BenchmarkError(f"{where}: seed must be an integer, got {seed!r}")
    references = tuple(_resolve_reference(root, r, where) for r in refs)
    raw_targets = obj.get("targets", [])
    if not isinstance(raw_targets, list) or (raw_targets and (
            len(raw_targets) != len(refs) or not all(isinstance(t, list) for t in raw_targets))):
        raise BenchmarkError(
            f"{where}: targets must be a list with one list of image paths per reference ({len(refs)}), "
            f"e.g. [[\"a_2.png\"], []], got {raw_targets!r}"
        )
    targets = tuple(tuple(_resolve_reference(root, t, where) for t in per_id) for per_id in raw_targets)
    ground_truth = _resolve_reference(root, obj["ground_truth"], where) if "ground_truth" in obj else None
    return Case(case_id=case_id, prompt=prompt, references=references, seed=seed, targets=targets,
                ground_truth=ground_truth)


def read_benchmark(path: str | os.PathLike) -> list[Case]:
    """Read and validate a benchmark JSONL; blank lines are skipped.

    Raises BenchmarkError naming the line for malformed JSON, bad fields, duplicate case ids and
    missing reference files.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"benchmark file not found: {path}")
    root = path.parent.resolve()
    cases: list[Case] = []
    seen: dict[str, str] = {}
    for where, obj, error in jsonl_lines(path):
        if error:
            raise BenchmarkError(f"{where}: {error}")
        case = parse_case(obj, root, where)
        if case.case_id in seen:
            raise BenchmarkError(
                f"{where}: duplicate case_id {case.case_id!r} (first on line {seen[case.case_id]})"
            )
        seen[case.case_id] = where.rsplit(":", 1)[1]
        cases.append(case)
    if not cases:
        raise BenchmarkError(f"{path}: the benchmark has no cases")
    return cases


def write_benchmark(path: str | os.PathLike, cases: list[Case]) -> Path:
    """Write cases as a benchmark JSONL (atomically), paths relative to its folder when inside."""
    path = Path(path)
    ids = [c.case_id for c in cases]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise BenchmarkError(f"write_benchmark({path}): duplicate case ids {dupes}")
    root = path.parent.resolve()
    write_jsonl(path, [c.to_json(root) for c in cases])
    return path


def check_identity_counts(cases: list[Case], max_identities: int, where: str, limit_name: str) -> None:
    """BenchmarkError naming every case with more references than `max_identities` (called `limit_name`)."""
    too_many = [f"{c.case_id} ({len(c.references)})" for c in cases if len(c.references) > max_identities]
    if too_many:
        raise BenchmarkError(f"{where}: {len(too_many)} case(s) have more references than {limit_name}="
                             f"{max_identities}: {', '.join(too_many[:10])}; drop those cases or use a model (or a "
                             "benchmark setting) that takes that many identities")
