"""JSON Lines files read line by line, each value with the `file:line` it came from."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def jsonl_lines(path: str | os.PathLike) -> Iterator[tuple[str, Any, str | None]]:
    """(where, value, error) per non-blank line: `where` is "file:line"; on invalid JSON the value is
    None and `error` says what is wrong, so a caller can refuse the file or skip and count the line."""
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            yield where, json.loads(line), None
        except json.JSONDecodeError as err:
            yield where, None, f"invalid JSON ({err.msg} at column {err.colno})"
