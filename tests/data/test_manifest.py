"""Manifest rows cannot point outside their root: escapes via '..', absolute paths or symlinks are
refused on reading, with the file and line named; the layout curation writes is accepted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ingredients.data.manifest import read_manifest


def _row(clip_id: str = "c0", video: str = "../raw/vid_000.mp4", reference: str = "refs/c0_0.png",
         mask_path: str | None = None) -> str:
    return json.dumps({
        "clip_id": clip_id, "video": video, "start_frame": 0, "end_frame": 2, "fps": 8.0, "width": 64,
        "height": 64, "caption": "a person", "mask_kind": "segmentation" if mask_path else "box",
        "mask_path": mask_path,
        "identities": [{"cluster": 0, "reference": reference, "reference_frame": 0,
                        "reference_outside_clip": False, "boxes": [[1, 1, 9, 9], None]}],
    })


@pytest.fixture()
def data(tmp_path) -> Path:
    """data/{raw,curated}: the layout of the DVC pipeline."""
    (tmp_path / "data" / "raw").mkdir(parents=True)
    (tmp_path / "data" / "curated" / "refs").mkdir(parents=True)
    return tmp_path / "data"


def _write(data: Path, *rows: str) -> Path:
    path = data / "curated" / "manifest.jsonl"
    path.write_text("".join(r + "\n" for r in rows))
    return path


def test_the_curation_layout_is_accepted(data):
    clips = read_manifest(_write(data, _row("c0"), _row("c1", mask_path="masks/c1.npz")))
    assert [c.clip_id for c in clips] == ["c0", "c1"]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (_row(video="../../secrets/vid.mp4"), r"video '\.\./\.\./secrets/vid\.mp4' resolves to .*secrets/vid\.mp4, outside the data root"),
        (_row(video="/etc/passwd"), r"video '/etc/passwd' is absolute"),
        (_row(reference="../raw/face.png"), r"reference '\.\./raw/face\.png' resolves to .*, outside the manifest's folder"),
        (_row(reference="/tmp/face.png"), r"reference '/tmp/face\.png' is absolute"),
        (_row(mask_path="../../m.npz"), r"mask_path '\.\./\.\./m\.npz' resolves to .*, outside the manifest's folder"),
    ],
)
def test_escaping_paths_are_refused_with_the_line(data, row, message):
    path = _write(data, _row("ok"), row)
    with pytest.raises(ValueError, match=rf"manifest\.jsonl:2: invalid manifest row: {message}"):
        read_manifest(path)


def test_a_symlink_out_of_the_root_is_refused(data, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (data / "raw" / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ValueError, match=r"manifest\.jsonl:1: .*elsewhere/vid\.mp4, outside the data root"):
        read_manifest(_write(data, _row(video="../raw/link/vid.mp4")))


def test_the_data_root_can_be_widened_explicitly(data, tmp_path):
    path = _write(data, _row(video="../../shared_videos/vid.mp4"))
    with pytest.raises(ValueError, match="pass --data-root to widen it"):
        read_manifest(path)
    assert read_manifest(path, data_root=tmp_path)[0].video == "../../shared_videos/vid.mp4"
