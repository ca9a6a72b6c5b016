"""Clip captions: the captioner plug-in point of curation.

The default reads the sidecar `NAME.txt` next to `NAME.mp4` (UTF-8, non-empty), or `NAME.json` with a
"caption" key. A captions file or a clip list gives captions through the `data:` source instead. A model-based
captioner (e.g. a video VLM) implements the same `caption(video_path, start, end)`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol, runtime_checkable


class CaptionError(Exception):
    """No usable caption; `reason` is the drop-count key ('missing_caption', 'unreadable_sidecar')."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


@runtime_checkable
class Captioner(Protocol):
    name: str

    def caption(self, video_path: Path, start: int, end: int) -> str:
        """Caption of frames [start, end) of the video; raises CaptionError."""
        ...


class SidecarCaptioner:
    """The text of `video_path.with_suffix('.txt')`, whitespace-normalised, for every clip."""

    name = "sidecar"

    def caption(self, video_path: Path, start: int = 0, end: int | None = None) -> str:
        path = Path(video_path).with_suffix(".txt")
        as_json = Path(video_path).with_suffix(".json")
        if not path.exists() and as_json.exists():
            return self._from_json(as_json)
        if not path.exists():
            raise CaptionError("missing_caption", f"no caption sidecar {path} (or {as_json.name} with a \"caption\" key); "
                               "write the caption there (UTF-8 text), or set data.captions_file")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise CaptionError("unreadable_sidecar", f"cannot read caption sidecar {path}: {e}; it must be a UTF-8 text file") from e
        text = " ".join(text.split())
        if not text:
            raise CaptionError("unreadable_sidecar", f"caption sidecar {path} is empty")
        return text

    @staticmethod
    def _from_json(path: Path) -> str:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CaptionError("unreadable_sidecar", f"cannot read caption sidecar {path}: {e}") from e
        text = " ".join(str(data.get("caption", "")).split()) if isinstance(data, dict) else ""
        if not text:
            raise CaptionError("unreadable_sidecar", f"caption sidecar {path} has no non-empty \"caption\" key")
        return text


CAPTIONERS = {"sidecar": SidecarCaptioner}


def build_captioner(name: str) -> Captioner:
    if name not in CAPTIONERS:
        raise ValueError(f"unknown captioner {name!r}; valid: {', '.join(sorted(CAPTIONERS))}")
    return CAPTIONERS[name]()
