"""The `data:` sources of curation: a nested folder tree equals the same videos laid flat, captions
from sidecars (.txt / .json) or a captions file, and a clip list picks exactly its frames."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ingredients.config import ParamsError, validate_model
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


# slow: the default suite measured 19 min 24 s on a fresh clone with it (budget 15); runs under -m slow
@pytest.mark.slow
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
    captions = folder / "captions.csv"
    captions.write_text("path,caption\na.mp4,from the file\n")
    items, _ = collect_items(DataParams(source="videos", path=str(folder), captions_file="captions.csv"))
    assert [(i.key, i.caption) for i in items] == [("a", "from the file")]


def test_a_clip_list_picks_exactly_its_frames(layouts, tmp_path):
    _, flat, _ = layouts
    clips = flat / "clips.jsonl"
    clips.write_text("\n".join([
        json.dumps({"video": str(flat / "vid_000.mp4"), "start": 6, "end": 20, "caption": "one person"}),
        json.dumps({"video": "missing.mp4", "caption": "x"}),
        json.dumps({"video": str(flat / "vid_000.mp4"), "start": 9, "end": 3}),
    ]) + "\n")
    report = curate(DataParams(source="list", path=str(flat), list_file="clips.jsonl"), tmp_path / "out",
                    CurationParams(contact_sheet_clips=0))
    rows = [json.loads(line) for line in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert [(r["start_frame"], r["end_frame"]) for r in rows] == [(6, 20)]  # one shot: exactly the listed frames
    assert all(len(i["boxes"]) == 14 for i in rows[0]["identities"])
    assert {r["caption"] for r in rows} == {"one person"}
    assert report["videos"]["skipped"] == {"bad_range": 1, "missing_video": 1}
    clips.unlink()
    with pytest.raises(ParamsError, match="data.captions_file: .*only for source 'videos' or 'synth'"):
        validate_model(DataParams, {"source": "list", "path": str(flat), "list_file": "clips.jsonl", "captions_file": "c.csv"}, "data")


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
               CurationParams(analyzer_options={"dlib": {"model_dir": str(tmp_path / "nowhere")}}))
    assert not (tmp_path / "out" / "work").exists() or not any((tmp_path / "out" / "work").iterdir())


def test_a_list_line_that_is_not_an_object_is_skipped_and_counted(tmp_path):
    from ingredients.data.sources import read_clip_list

    clips = tmp_path / "clips.jsonl"
    clips.write_text('["not", "an", "object"]\n{broken\n')
    items, skipped = read_clip_list(clips)
    assert items == [] and [(s.key, s.reason) for s in skipped] == [("clips.jsonl:1", "bad_list_line"), ("clips.jsonl:2", "bad_list_line")]


# ---------------------------------------------------------------------------------------------
# issue 21: ids are names, the split is by video, every input is fingerprinted and under data.path


def _write_list(folder: Path, rows: list[dict], name: str = "clips.jsonl") -> DataParams:
    (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return DataParams(source="list", path=str(folder), list_file=name)


@pytest.mark.parametrize("bad_id", ["/abs/x", "../../x", "a/b", "..", "x.json"])
def test_a_list_id_is_a_name_never_a_path(layouts, tmp_path, bad_id):
    """Finding 1: an absolute `id` escaped OUT/work/ and overwrote the raw video's x.json sidecar."""
    _, flat, _ = layouts
    folder = tmp_path / "data"
    folder.mkdir()
    shutil.copyfile(flat / "vid_000.mp4", folder / "x.mp4")
    sidecar = folder / "x.json"
    sidecar.write_text('{"caption": "kept"}')
    bad = bad_id if bad_id != "/abs/x" else str(folder / "x")
    data = _write_list(folder, [{"video": "x.mp4", "end": 12, "caption": "one", "id": bad}])
    with pytest.raises(ValueError, match=r"clips\.jsonl:1: 'id' .* must be a plain name"):
        curate(data, tmp_path / "out", CurationParams(contact_sheet_clips=0))
    assert sidecar.read_text() == '{"caption": "kept"}'
    assert not (tmp_path / "out" / "work").exists() or not any((tmp_path / "out" / "work").iterdir())


def test_the_list_source_splits_by_video(layouts, tmp_path):
    """Finding 2: ranges of one video went to both sides of the split; val_videos held clip keys."""
    _, flat, _ = layouts
    rows = [{"video": f"{v}.mp4", "start": a, "end": b, "caption": "c"} for v in VIDEOS for a, b in ((0, 10), (10, 20))]
    data = _write_list(flat, rows, "split.jsonl").model_copy(update={"val_fraction": 0.5})
    report = curate(data, tmp_path / "out", CurationParams(contact_sheet_clips=0))
    (flat / "split.jsonl").unlink()
    train = [json.loads(line) for line in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    val = [json.loads(line) for line in (tmp_path / "out" / "val.jsonl").read_text().splitlines()]
    assert report["split"]["val_videos"] == ["vid_001"]  # the video, not its clips
    assert train and {Path(r["video"]).name for r in train} == {"vid_000.mp4"}
    assert val and {Path(r["video"]).name for r in val} == {"vid_001.mp4"}


def test_editing_a_sidecar_reruns_its_video(layouts, tmp_path):
    """Finding 3: the resume fingerprint was the video file only: an edited .txt kept its old caption."""
    _, flat, _ = layouts
    folder = tmp_path / "v"
    folder.mkdir()
    shutil.copyfile(flat / "vid_000.mp4", folder / "vid_000.mp4")
    (folder / "vid_000.txt").write_text("first caption")
    out = tmp_path / "project" / "data" / "curated"  # the videos lie outside the project's data/
    params, data = CurationParams(contact_sheet_clips=0), DataParams(source="videos", path=str(folder))
    curate(data, out, params)
    (folder / "vid_000.txt").write_text("edited caption")
    report = curate(data, out, params)
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert report["throughput"]["run_videos"] == 1 and rows and {r["caption"] for r in rows} == {"edited caption"}
    # finding 4: training refused videos outside data/ ("outside the data root"); the manifest's readers
    # now take the root curation read from report.json beside it
    from ingredients.data.manifest import read_manifest

    assert [c.caption for c in read_manifest(out / "manifest.jsonl")] == ["edited caption"] * len(rows)
    with pytest.raises(ValueError, match="outside the data root"):
        read_manifest(out / "manifest.jsonl", data_root=tmp_path / "project" / "data")


def test_a_repaired_or_added_sidecar_changes_the_fingerprint(tmp_path):
    """Finding 3: a repaired .json stayed unreadable_sidecar, a newly added .txt stayed missing_caption."""
    from ingredients.data.sources import VideoItem
    from ingredients.data.video_curation import item_fingerprint

    video = tmp_path / "a.mp4"
    video.write_bytes(b"the same video bytes")
    item = VideoItem("a", video)
    seen = [item_fingerprint(item)]
    (tmp_path / "a.json").write_text("{broken")
    seen.append(item_fingerprint(item))
    (tmp_path / "a.json").write_text('{"caption": "repaired"}')
    seen.append(item_fingerprint(item))
    (tmp_path / "a.txt").write_text("added")
    seen.append(item_fingerprint(item))
    assert len(set(seen)) == 4 and item_fingerprint(item) == seen[-1]


def test_inputs_outside_data_path_are_refused_naming_the_key(layouts, tmp_path):
    """Finding 3: a captions file or list video outside data.path (the curate stage's only data dep)
    was read, so editing it left `dvc repro` "up to date" over old clips."""
    _, flat, _ = layouts
    folder = tmp_path / "videos"
    folder.mkdir()
    shutil.copyfile(flat / "vid_000.mp4", folder / "a.mp4")
    (tmp_path / "captions.csv").write_text("path,caption\na.mp4,x\n")
    with pytest.raises(ValueError, match=r"data.captions_file '\.\./captions\.csv' lies outside data.path"):
        collect_items(DataParams(source="videos", path=str(folder), captions_file="../captions.csv"))
    with pytest.raises(ValueError, match=r"clips\.jsonl:1: video .*vid_001\.mp4' lies outside data.path"):
        collect_items(_write_list(folder, [{"video": str(flat / "vid_001.mp4")}]))


def test_every_curation_input_is_a_dvc_dep_of_the_curate_stage(tmp_path):
    """`dvc status` in a project whose curate stage has the repository's deps: editing the captions
    file, a sidecar or a listed video marks the stage changed (its command here only copies)."""
    import subprocess
    import sys

    import yaml

    root = Path(__file__).resolve().parents[2]
    stage = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]["curate"]
    data_deps = [d for d in stage["deps"] if "${" in d]
    project = tmp_path / "p"
    (project / "footage" / "sub").mkdir(parents=True)
    (project / "footage" / "sub" / "a.mp4").write_bytes(b"video a")
    (project / "footage" / "sub" / "a.txt").write_text("sidecar a")
    (project / "footage" / "captions.csv").write_text("path,caption\nsub/a.mp4,x\n")
    (project / "params.yaml").write_text(yaml.safe_dump({"data": {"source": "videos", "path": "footage",
                                                                  "captions_file": "captions.csv"}}))
    (project / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"curate": {
        "cmd": "cp -r footage out", "deps": data_deps, "params": ["data"], "outs": ["out"]}}}))
    dvc = [str(Path(sys.executable).parent / "dvc")]

    def run(*args: str) -> str:
        done = subprocess.run(dvc + list(args), cwd=project, capture_output=True, text=True, env={
            **__import__("os").environ, "DVC_NO_ANALYTICS": "1"})
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    run("init", "-q")
    run("repro", "-q")
    assert "up to date" in run("status")
    for path in ("footage/captions.csv", "footage/sub/a.txt", "footage/sub/a.mp4"):
        before = (project / path).read_bytes()
        (project / path).write_bytes(before + b"\nedited")
        assert "changed deps" in run("status"), path
        (project / path).write_bytes(before)
    assert "up to date" in run("status")


def test_symlinked_folders_are_followed_once(tmp_path):
    """Finding 4: `rglob` did not follow symlinked subfolders (Python 3.11): their videos were skipped."""
    root = tmp_path / "videos"
    (root / "real").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "b.mp4").write_bytes(b"b")
    (root / "real" / "a.mp4").write_bytes(b"a")
    (root / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (root / "real" / "loop").symlink_to(root, target_is_directory=True)  # a loop: visited once
    items, _ = collect_items(DataParams(source="videos", path=str(root)))
    assert [i.key for i in items] == ["linked__b", "real__a"]


@pytest.mark.parametrize(("line", "message"), [
    ({"video": "a.mp4", "strat": 5, "stop": 9}, r"clips\.jsonl:2: unknown key\(s\) \['stop', 'strat'\]"),
    ({"video": "a.mp4", "start": 0, "end": 12.5}, r"clips\.jsonl:2: 'end': 12\.5 is not a whole frame number"),
    ({"video": "a.mp4", "caption": 7}, r"clips\.jsonl:2: 'caption' must be text"),
    ({"video": "a.mp4", "unit": "minutes"}, r"clips\.jsonl:2: 'unit' must be"),
])
def test_a_bad_list_line_stops_the_run_naming_its_line(tmp_path, line, message):
    """Findings 4 and 8: unknown keys were ignored (`strat`/`stop` curated the whole video), fractional
    frames truncated, a non-string caption failed later with pydantic's text and no line."""
    (tmp_path / "a.mp4").write_bytes(b"a")
    data = _write_list(tmp_path, [{"video": "a.mp4", "end": 4}, line])
    with pytest.raises(ValueError, match=message):
        collect_items(data)


def test_colliding_list_lines_are_named_and_distinct_units_do_not_collide(tmp_path):
    """Finding 8: duplicates were refused with "rename them" and no line numbers; frames 1-2 and
    seconds 1-2 of one video got the same key."""
    (tmp_path / "a.mp4").write_bytes(b"a")
    rows = [{"video": "a.mp4", "start": 1, "end": 2}, {"video": "a.mp4", "start": 1, "end": 2, "unit": "seconds"}]
    items, _ = collect_items(_write_list(tmp_path, rows))
    assert [i.key for i in items] == ["a__1-2", "a__1s-2s"] and {i.split_key for i in items} == {"a"}
    with pytest.raises(ValueError, match=r"key 'a__1-2' from .*clips\.jsonl:1, .*clips\.jsonl:3"):
        collect_items(_write_list(tmp_path, rows + [rows[0]]))


def test_a_spreadsheet_csv_and_a_row_naming_no_video(tmp_path):
    """Finding 8: a CSV saved with a BOM was refused as '\\ufeffpath'; a row with a path typo was ignored
    and its video then reported "or set data.captions_file" although it was set."""
    (tmp_path / "a.mp4").write_bytes(b"a")
    (tmp_path / "captions.csv").write_bytes("path,caption\r\na.mp4,from excel\r\n".encode("utf-8-sig"))
    data = DataParams(source="videos", path=str(tmp_path), captions_file="captions.csv")
    assert [(i.key, i.caption) for i in collect_items(data)[0]] == [("a", "from excel")]
    (tmp_path / "captions.csv").write_text("path,caption\na.mp4,x\nb.mp4,typo\n")
    with pytest.raises(ValueError, match=r"captions\.csv:3: no video 'b\.mp4' under .*fix the path"):
        collect_items(data)


def test_a_range_past_the_end_is_named_not_counted_corrupt(layouts, tmp_path):
    """Findings 4 and 8: an `end` past the video was cut while the clip id kept the asked range, and a
    range starting past the end was counted `corrupt_video`; report.json now says per video why it
    gave no clip."""
    _, flat, _ = layouts
    folder = tmp_path / "d"
    folder.mkdir()
    shutil.copyfile(flat / "vid_000.mp4", folder / "v.mp4")  # 24 frames
    data = _write_list(folder, [{"video": "v.mp4", "start": 10, "end": 100, "caption": "c"},
                                {"video": "v.mp4", "start": 50, "end": 60, "caption": "c"}])
    report = curate(data, tmp_path / "out", CurationParams(contact_sheet_clips=0))
    assert report["videos"]["skipped"] == {"range_past_end": 2}
    outcomes = report["videos"]["outcomes"]
    assert outcomes["v__10-100"]["why"] == "range_past_end" and "clips.jsonl:1" in outcomes["v__10-100"]["message"]
    assert "set end <= 24" in outcomes["v__10-100"]["message"]
    assert outcomes["v__50-60"]["why"] == "range_past_end" and "clips.jsonl:2" in outcomes["v__50-60"]["message"]
    assert report["videos"]["without_clips"] == 2
    from eval.report import curation_section  # the report page lists them

    page = "".join(curation_section(tmp_path / "out" / "report.json"))
    assert "2 of 2 videos" in page and "<b>v__10-100</b>: range_past_end: " in page and "clips.jsonl:2" in page


def test_an_unusable_split_or_too_many_failures_refuse_the_output():
    """Findings 4 and 5: val_fraction 0.99 with 2 videos wrote an empty training manifest and exited 0;
    a run with failed videos exited 0 with a partial manifest that DVC cached."""
    from ingredients.data.curate import refusals

    def report(train: int, val: int, fraction: float, failed: int = 0) -> dict:
        return {"videos": {"total": 10, "skipped": {"failed": failed} if failed else {}},
                "clips": {"kept": train + val, "dropped": {}},
                "split": {"val_fraction": fraction, "val_videos": ["b"] if val else [], "train_clips": train, "val_clips": val}}

    params = CurationParams()
    assert refusals(report(5, 2, 0.2), params) == [] and refusals(report(5, 0, 0.0, failed=1), params) == []
    assert "training set is empty" in refusals(report(0, 7, 0.99), params)[0]
    assert "validation set is empty" in refusals(report(7, 0, 0.1), params)[0]
    assert "2 of 10 videos failed (more than curate.max_failed_fraction = 0.1)" in refusals(report(5, 0, 0.0, failed=2), params)[0]
    assert refusals(report(5, 0, 0.0, failed=2), CurationParams(max_failed_fraction=0.2)) == []
