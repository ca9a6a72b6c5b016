"""Atomic file writes: write to a temp file in the destination folder, then `os.replace`.

A reader never sees a half-written output, and an interrupted run leaves the previous file intact.
A run killed mid-write (SIGKILL) leaves its temp file behind, named `.{name}.XXXXXXXX{suffix}`
(`.{name}.XXXXXXXX` for a folder); `remove_stale_temps` clears them when a stage resumes, so they are
not cached with a DVC-tracked output. While a write is in flight its temp holds an advisory lock
(flock), which tells a stale temp from one another live process is still writing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # not POSIX: no lock, the sweep then treats every matching temp as stale
    fcntl = None

logger = logging.getLogger(__name__)

# tempfile's random part: 8 characters from this alphabet (tempfile._RandomNameSequence)
_RANDOM_PART = re.compile(r"[a-z0-9_]{8}")


def _lock(fd: int) -> None:
    """Hold an exclusive advisory lock on `fd` until it is closed (released by the kernel on death)."""
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success move it onto `path`, on error delete it.

    `suffix` defaults to the destination's suffix, so writers that pick a format from the file
    name (imageio, matplotlib) still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=path.suffix if suffix is None else suffix, dir=path.parent
    )
    tmp_path = Path(tmp)
    try:
        _lock(fd)  # kept until the end: marks the temp as in use for remove_stale_temps
        yield tmp_path
        # mkstemp creates 0600 files; give the result the permissions a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        os.close(fd)
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp folder beside `path`; on success it replaces `path`, on error it is deleted.

    A reader sees the old folder, no folder, or the complete new one; never a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    fd = os.open(tmp, os.O_RDONLY)
    try:
        _lock(fd)  # marks the temp folder as in use for remove_stale_temps
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700 folders
        if path.exists():
            # the old folder goes aside in one rename before it is deleted: a kill from here on
            # leaves no folder or the new one at `path` (never a half-deleted old one), and the
            # aside folder has a temp name, so remove_stale_temps clears it
            aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
            os.replace(path, aside)  # onto the empty folder mkdtemp made
            tmp.rename(path)
            shutil.rmtree(aside, ignore_errors=True)
            if aside.exists():
                logger.warning("could not delete the replaced folder %s; remove_stale_temps will", aside)
        else:
            tmp.rename(path)
    finally:
        os.close(fd)
        if tmp.exists():
            shutil.rmtree(tmp)


def is_atomic_temp_name(name: str) -> bool:
    """Whether `name` is one `atomic_path` / `atomic_dir` makes: `.{dest}.{8 random}{suffix}`, where
    the suffix is empty, the destination's own suffix, or starts with `.tmp` (the data package's)."""
    if not name.startswith(".") or name in (".", ".."):
        return False
    parts = name[1:].split(".")
    for i in range(1, len(parts)):
        dest, random_part = ".".join(parts[:i]), parts[i]
        suffix = "".join("." + p for p in parts[i + 1:])
        if dest and _RANDOM_PART.fullmatch(random_part) and (
            suffix in ("", Path(dest).suffix) or suffix.startswith(".tmp")
        ):
            return True
    return False


def _in_use(path: Path) -> bool:
    """Whether a live writer holds the temp's lock (then it is not stale)."""
    if fcntl is None:
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # non-blocking: a FIFO must not hang the sweep
    except OSError:  # gone already, or unreadable: nothing to hold
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def find_stale_temps(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Temp files and folders of interrupted atomic writes under `folder` (not descending into
    them, nor following links); those a live writer still holds are left out."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        here = Path(root)
        for name in sorted(files):
            if is_atomic_temp_name(name) and not (here / name).is_symlink() and not _in_use(here / name):
                found.append(here / name)
        temp_dirs = [d for d in dirs if is_atomic_temp_name(d)]
        found += [here / d for d in sorted(temp_dirs) if not (here / d).is_symlink() and not _in_use(here / d)]
        dirs[:] = [d for d in dirs if d not in temp_dirs] if recursive else []
    return sorted(found)


def remove_stale_temps(folder: str | os.PathLike, recursive: bool = True) -> int:
    """Delete what interrupted atomic writes left under `folder` (see `find_stale_temps`); returns
    how many files and folders went. A stage calls it on its own output folders before resuming."""
    stale = find_stale_temps(folder, recursive)
    for path in stale:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    if stale:
        logger.info("removed %d stale temp file(s) of interrupted writes under %s", len(stale), folder)
    return len(stale)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2, sort_keys: bool = True) -> Path:
    """Write `obj` as JSON atomically (key-sorted by default, so identical inputs give byte-identical
    files; NaN is refused: it is not JSON)."""
    return write_text(path, json.dumps(obj, indent=indent, sort_keys=sort_keys, allow_nan=False) + "\n")


def write_jsonl(path: str | os.PathLike, rows: list[dict]) -> Path:
    """Write one key-sorted JSON object per line atomically."""
    text = "".join(json.dumps(r, sort_keys=True, allow_nan=False) + "\n" for r in rows)
    return write_text(path, text)


def write_png(path: str | os.PathLike, image: Any) -> Path:
    """Write an RGB uint8 [H, W, 3] (or gray [H, W]) array as a PNG atomically."""
    import numpy as np
    from PIL import Image

    with atomic_path(path, suffix=".tmp.png") as tmp:
        Image.fromarray(np.asarray(image)).save(tmp, format="PNG")
    return Path(path)


def write_npz(path: str | os.PathLike, **arrays: Any) -> Path:
    """Write arrays to a compressed .npz atomically."""
    import numpy as np

    with atomic_path(path, suffix=".tmp.npz") as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    return Path(path)
