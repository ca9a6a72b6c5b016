"""The benchmark stage (`python -m eval.build_benchmark`): every source writes data/benchmark/benchmark.jsonl,
OpenS2V-Eval through its documented JSON layout, and cases larger than the model takes are refused."""

from __future__ import annotations

import json
import logging
from collections import Counter

import pytest
import yaml

from eval.build_benchmark import main
from ingredients.sampling.benchmark import BenchmarkError, Case, check_identity_counts, read_benchmark, write_benchmark

# OpenS2V-Eval's layout (Hugging Face dataset BestWishYsh/OpenS2V-Eval): {case_id: {img_paths, prompt,
# synthesis_flag, class_label}}, the class is the id prefix, a face is an image under man/woman/crop_*
OPEN_DOMAIN = {
    "multihuman_1": (["multihuman/man/1.jpg", "multihuman/woman/1.jpg"], ["Man", "Woman"]),
    "multihuman_2": (["multihuman/man/2.jpg", "multihuman/woman/2.jpg", "multihuman/woman/3.jpg"], ["Man", "Woman", "Woman"]),
    "multiface_1": (["multiface/crop_man/1.png", "multiface/crop_woman/1.png"], ["Man", "Woman"]),
    "faceobj_1": (["faceobj/crop_woman/4.png", "faceobj/object/4.jpg"], ["Woman", "Cup"]),
    "singleface_1": (["singleface/crop_man/2.png"], ["Man"]),
    "multiobject_1": (["multiobject/object/5.jpg", "multiobject/object/6.jpg"], ["Dog", "Cat"]),
}
def _png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 150, 120)).save(buf, format="PNG")
    return buf.getvalue()


PNG = _png()  # a real (tiny) image: the stage refuses references that are not images
HUMAN_DOMAIN = {"singlehuman_1": (["singlehuman/woman/7.jpg"], ["Woman"])}


@pytest.fixture
def opens2v(tmp_path):
    root = tmp_path / "OpenS2V-Eval"
    for name, cases in (("Open-Domain_Eval.json", OPEN_DOMAIN), ("Human-Domain_Eval.json", HUMAN_DOMAIN)):
        data = {}
        for case_id, (paths, labels) in cases.items():
            paths = [f"Images/{p}" for p in paths]
            for p in paths:
                (root / p).parent.mkdir(parents=True, exist_ok=True)
                (root / p).write_bytes(PNG)
            data[case_id] = {"img_paths": paths, "prompt": f"prompt of {case_id}", "synthesis_flag": "True",
                             "class_label": labels}
        (root / name).write_text(json.dumps(data))
    return root


def _run(tmp_path, **benchmark) -> list[Case]:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"benchmark": benchmark}))
    main(["--params", str(params), "--out", str(tmp_path / "data" / "benchmark")])
    return read_benchmark(tmp_path / "data" / "benchmark" / "benchmark.jsonl")


def test_opens2v_through_the_benchmark_stage(opens2v, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    cases = _run(tmp_path, source="opens2v", path=str(opens2v), max_identities=3)
    per_k = Counter(len(c.references) for c in cases)
    assert per_k == {1: 3, 2: 2, 3: 1}  # multiobject_1 has no face: not a case
    assert {c.case_id for c in cases} == set(OPEN_DOMAIN) - {"multiobject_1"} | set(HUMAN_DOMAIN)
    faceobj = next(c for c in cases if c.case_id == "faceobj_1")
    assert [p.name for p in faceobj.references] == ["4.png"]  # the object image is not a face reference
    assert "cases per K: {1: 3, 2: 2, 3: 1}" in caplog.text


def test_multi_face_only(opens2v, tmp_path):
    cases = _run(tmp_path, source="opens2v", path=str(opens2v), max_identities=3, opens2v={"min_faces": 2})
    assert sorted(c.case_id for c in cases) == ["multiface_1", "multihuman_1", "multihuman_2"]


def test_cases_larger_than_max_identities_are_refused_by_name(opens2v, tmp_path):
    with pytest.raises(SystemExit, match=r"more references than benchmark.max_identities=2: multihuman_2 \(3\)"):
        _run(tmp_path, source="opens2v", path=str(opens2v), max_identities=2)


def test_jsonl_source_is_copied_with_its_references(tmp_path):
    ref = tmp_path / "elsewhere" / "a.png"
    ref.parent.mkdir()
    ref.write_bytes(PNG)
    src = write_benchmark(tmp_path / "elsewhere" / "mine.jsonl", [Case("c1", "a prompt", (ref.resolve(),), 3)])
    cases = _run(tmp_path, source="jsonl", path=str(src))
    assert cases == [Case("c1", "a prompt", (ref.resolve(),), 3)]


def test_identity_count_check_names_the_limit():
    cases = [Case("big", "p", tuple(f"/r{i}" for i in range(3)), 0)]
    with pytest.raises(BenchmarkError, match=r"bench.jsonl: 1 case\(s\) have more references than the model's max_identities=2: big \(3\)"):
        check_identity_counts(cases, 2, "bench.jsonl", "the model's max_identities")


def test_a_reference_that_is_not_an_image_is_refused_by_the_stage(tmp_path):
    """Issue 21, finding 8: a non-image reference passed the benchmark stage and failed in the oracle."""
    ref = tmp_path / "elsewhere" / "a.png"
    ref.parent.mkdir()
    ref.write_text("not a picture")
    src = write_benchmark(tmp_path / "elsewhere" / "mine.jsonl", [Case("c1", "a prompt", (ref.resolve(),), 3)])
    with pytest.raises(SystemExit, match=r"case 'c1': reference .*a\.png is not an image .*replace it with a PNG or JPEG"):
        _run(tmp_path, source="jsonl", path=str(src))
