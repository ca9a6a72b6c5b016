"""The `data:` sources of curation: a nested folder tree equals the same videos laid flat, captions
from sidecars (.txt / .json) or a captions file, and a clip list picks exactly its frames."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ingredients.config import ParamsError
from ingredients.data.curate import curate
from ingredients.data.curation_params import CurationParams
from ingredients.data.sources import DataParams, collect_items

VIDEOS = ("vid_000", "vid_001")  # one identity; two identities with a mid-clip cut


def _lay_out(raw: Path, root: Path, where: dict[str, str]) -> Path:
    for stem, folder in where.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for suffix in (".mp4", ".txt"):
            shutil.copyfile(raw / f"{stem}{suffix}", root / folder / f"{stem}{suffix}")
    return root


def _clips(out: Path) -> dict[str, list[dict]]:
    """Manifest rows per source video file name, without the names that depend on the layout."""
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    by_video: dict[str, list[dict]] = {}
    for row in rows:
        masks = np.load(out / row["mask_path"])["masks"] if row["mask_path"] else None
        by_video.setdefault(Path(row["video"]).name, []).append({
            "frames": (row["start_frame"], row["end_frame"]), "caption": row["caption"],
            "identities": [(i["reference_frame"], i["boxes"]) for i in row["identities"]],
            "masks": None if masks is None else masks.tobytes()})
    return by_video


@pytest.fixture(scope="module")
def layouts(tiny_raw, tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    flat = _lay_out(tiny_raw, root / "flat", {s: "." for s in VIDEOS})
    nested = _lay_out(tiny_raw, root / "nested", {"vid_000": "2024/june", "vid_001": "other"})
    (nested / "2024" / "notes.txt").write_text("not a video")
    return root, flat, nested


def test_nested_folder_equals_the_same_videos_laid_flat(layouts):
    root, flat, nested = layouts
    assert [i.key for i in collect_items(DataParams(source="videos", path=str(nested)))[0]] == [
        "2024__june__vid_000", "other__vid_001"]
    params = CurationParams(masker="landmarks", contact_sheet_clips=0)
    flat_report = curate(DataParams(source="videos", path=str(flat)), root / "out_flat", params)
    nested_report = curate(DataParams(source="videos", path=str(nested)), root / "out_nested", params)
    assert flat_report["clips"]["kept"] == nested_report["clips"]["kept"] > 0
    assert _clips(root / "out_flat") == _clips(root / "out_nested")


def test_synth_source_reads_the_top_level_only(layouts):
    _, _, nested = layouts
    assert collect_items(DataParams(source="synth", path=str(nested)))[0] == []


def test_captions_from_json_sidecar_and_from_a_captions_file(layouts, tmp_path):
    _, flat, _ = layouts
    folder = tmp_path / "v"
    folder.mkdir()
    shutil.copyfile(flat / "vid_000.mp4", folder / "a.mp4")
    (folder / "a.json").write_text(json.dumps({"caption": "  a man   talking "}))
    from ingredients.data.captions import SidecarCaptioner

    assert SidecarCaptioner().caption(folder / "a.mp4") == "a man talking"
    captions = tmp_path / "captions.csv"
    captions.write_text("path,caption\na.mp4,from the file\n")
    items, _ = collect_items(DataParams(source="videos", path=str(folder), captions_file=str(captions)))
    assert [(i.key, i.caption) for i in items] == [("a", "from the file")]


def test_a_clip_list_picks_exactly_its_frames(layouts, tmp_path):
    _, flat, _ = layouts
    clips = tmp_path / "clips.jsonl"
    clips.write_text("\n".join([
        json.dumps({"video": str(flat / "vid_000.mp4"), "start": 6, "end": 20, "caption": "one person"}),
        json.dumps({"video": "missing.mp4", "caption": "x"}),
        json.dumps({"video": str(flat / "vid_000.mp4"), "start": 9, "end": 3}),
    ]) + "\n")
    report = curate(DataParams(source="list", path=str(clips)), tmp_path / "out", CurationParams(contact_sheet_clips=0))
    rows = [json.loads(line) for line in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert [(r["start_frame"], r["end_frame"]) for r in rows] == [(6, 20)]  # one shot: exactly the listed frames
    assert all(len(i["boxes"]) == 14 for i in rows[0]["identities"])
    assert {r["caption"] for r in rows} == {"one person"}
    assert report["videos"]["skipped"] == {"bad_range": 1, "missing_video": 1}
    with pytest.raises(ParamsError, match="data.captions_file"):
        collect_items(DataParams(source="list", path=str(clips), captions_file="c.csv"))


def test_validation_videos_are_held_out_by_video(layouts, tmp_path):
    from ingredients.data.sources import is_validation

    keys = [f"clip_{i:03d}" for i in range(400)]
    held = [k for k in keys if is_validation(k, 0.25, seed=0)]
    assert 70 < len(held) < 130 and held == [k for k in keys if is_validation(k, 0.25, seed=0)]
    assert set(held) != {k for k in keys if is_validation(k, 0.25, seed=1)}
    _, flat, _ = layouts
    data = DataParams(source="videos", path=str(flat), val_fraction=0.5, val_seed=0)
    report = curate(data, tmp_path / "out", CurationParams(contact_sheet_clips=0))
    train = [json.loads(line) for line in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    val = [json.loads(line) for line in (tmp_path / "out" / "val.jsonl").read_text().splitlines()]
    assert {Path(r["video"]).stem for r in train}.isdisjoint({Path(r["video"]).stem for r in val})
    assert report["split"]["val_clips"] == len(val) and report["split"]["train_clips"] == len(train)
    assert sorted(report["split"]["val_videos"]) == sorted(k for k in VIDEOS if is_validation(k, 0.5, 0)) == ["vid_001"]


def test_a_face_stack_that_cannot_be_built_stops_curation_before_any_video(layouts, tmp_path):
    _, flat, _ = layouts
    with pytest.raises(FileNotFoundError, match="nowhere"):
        curate(DataParams(source="videos", path=str(flat)), tmp_path / "out",
               CurationParams(analyzer_options={"model_dir": str(tmp_path / "nowhere")}))
    assert not (tmp_path / "out" / "work").exists() or not any((tmp_path / "out" / "work").iterdir())


def test_a_list_line_that_is_not_an_object_is_skipped_and_counted(tmp_path):
    from ingredients.data.sources import read_clip_list

    clips = tmp_path / "clips.jsonl"
    clips.write_text('["not", "an", "object"]\n{broken\n')
    items, skipped = read_clip_list(clips)
    assert items == [] and skipped == {"bad_list_line": 2}
