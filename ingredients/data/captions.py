"""Clip captions: the captioner plug-in point of curation.

The default reads the sidecar `NAME.txt` next to `NAME.mp4` (UTF-8, non-empty). A model-based
captioner (e.g. a video VLM) implements the same `caption(video_path, start, end)`.
"""

from __future__ import annotations

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
        if not path.exists():
            raise CaptionError("missing_caption", f"no caption sidecar {path}; write the caption there (UTF-8 text)")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise CaptionError("unreadable_sidecar", f"cannot read caption sidecar {path}: {e}; it must be a UTF-8 text file") from e
        text = " ".join(text.split())
        if not text:
            raise CaptionError("unreadable_sidecar", f"caption sidecar {path} is empty")
        return text


CAPTIONERS = {"sidecar": SidecarCaptioner}


def build_captioner(name: str) -> Captioner:
    if name not in CAPTIONERS:
        raise ValueError(f"unknown captioner {name!r}; valid: {', '.join(sorted(CAPTIONERS))}")
    return CAPTIONERS[name]()
