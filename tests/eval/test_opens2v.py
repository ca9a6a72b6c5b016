import json

import pytest

from ingredients.sampling.benchmark import BenchmarkError, read_benchmark
from eval.opens2v import import_opens2v, is_face_reference


def test_face_reference_folders():
    assert is_face_reference("Images/multihuman/woman/13.jpg")
    assert is_face_reference("Images/singleface/crop_man/1.png")
    assert not is_face_reference("Images/multiobject/cup/woman.jpg")  # file name, not a folder
    assert not is_face_reference("Images/singleobject/bike/17.jpg")


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "OpenS2V-Eval"
    for rel in ("Images/multihuman/woman/13.jpg", "Images/multihuman/man/14.jpg",
                "Images/multihuman/object/3.jpg", "Images/singleface/crop_man/1.png"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"img")
    open_domain = {
        "multihuman_1": {"img_paths": ["Images/multihuman/woman/13.jpg", "Images/multihuman/object/3.jpg",
                                       "Images/multihuman/man/14.jpg"],
                         "prompt": "a woman and a man", "synthesis_flag": "wrong", "class_label": ["Woman", "Man"]},
        "singleface_1": {"img_paths": ["Images/singleface/crop_man/1.png"], "prompt": "a man"},
    }
    (root / "Open-Domain_Eval.json").write_text(json.dumps(open_domain))
    (root / "Human-Domain_Eval.json").write_text(json.dumps({"singleface_1": open_domain["singleface_1"]}))
    return root


def test_imports_multi_face_cases_only(dataset, tmp_path):
    out = tmp_path / "bench" / "opens2v.jsonl"
    cases = import_opens2v(dataset, out, seed=5)
    assert [c.case_id for c in cases] == ["multihuman_1"]
    read = read_benchmark(out)
    assert read == cases
    assert [p.relative_to(dataset.resolve()).as_posix() for p in read[0].references] == [
        "Images/multihuman/woman/13.jpg", "Images/multihuman/man/14.jpg"]
    assert read[0].seed == 5 and read[0].prompt == "a woman and a man"


def test_min_faces_one_keeps_single_face_cases(dataset, tmp_path):
    cases = import_opens2v(dataset, tmp_path / "b.jsonl", min_faces=1)
    assert sorted(c.case_id for c in cases) == ["multihuman_1", "singleface_1"]


def test_missing_image_and_missing_json_are_named(dataset, tmp_path):
    (dataset / "Images/multihuman/man/14.jpg").unlink()
    with pytest.raises(BenchmarkError, match="multihuman_1.*image not found"):
        import_opens2v(dataset, tmp_path / "b.jsonl")
    with pytest.raises(FileNotFoundError, match="Single-Domain_Eval.json"):
        import_opens2v(dataset, tmp_path / "b.jsonl", json_names=("Single-Domain_Eval.json",))


def test_a_case_id_in_two_files_is_kept_once_when_equal_and_twice_when_not(dataset, tmp_path, caplog):
    """Issue 21, finding 8: ids in two case files (60 in OpenS2V-Eval, 30 with different images) kept
    the first silently."""
    human = {"multihuman_1": {"img_paths": ["Images/multihuman/man/14.jpg", "Images/multihuman/woman/13.jpg"],
                              "prompt": "a man and a woman"}}
    (dataset / "Human-Domain_Eval.json").write_text(json.dumps(human))
    cases = import_opens2v(dataset, tmp_path / "b.jsonl")
    assert [c.case_id for c in cases] == ["multihuman_1", "multihuman_1__Human-Domain_Eval"]
    assert cases[1].prompt == "a man and a woman"
    assert "1 different (kept under distinct ids: multihuman_1 -> multihuman_1__Human-Domain_Eval)" in caplog.text
    opened = json.loads((dataset / "Open-Domain_Eval.json").read_text())
    (dataset / "Human-Domain_Eval.json").write_text(json.dumps({"multihuman_1": opened["multihuman_1"]}))
    assert [c.case_id for c in import_opens2v(dataset, tmp_path / "b.jsonl")] == ["multihuman_1"]
    assert "1 identical (imported once)" in caplog.text


def test_a_broken_case_file_is_named(dataset, tmp_path):
    """Issue 21, finding 8: a JSON decode error did not name the file."""
    (dataset / "Human-Domain_Eval.json").write_text('{"multihuman_1": ')
    with pytest.raises(BenchmarkError, match=r"Human-Domain_Eval\.json: not a readable JSON file"):
        import_opens2v(dataset, tmp_path / "b.jsonl")
