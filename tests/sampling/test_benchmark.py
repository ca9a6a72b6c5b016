import json

import pytest

from ingredients.sampling.benchmark import BenchmarkError, Case, read_benchmark, write_benchmark


@pytest.fixture
def root(tmp_path):
    (tmp_path / "refs").mkdir()
    for name in ("a.png", "b.png"):
        (tmp_path / "refs" / name).write_bytes(b"x")
    return tmp_path


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def line(case_id="c0", refs=("refs/a.png", "refs/b.png"), **extra):
    obj = {"case_id": case_id, "prompt": "p", "references": list(refs), "seed": 1}
    obj.update(extra)
    return json.dumps(obj)


def test_reads_cases_resolving_relative_and_absolute_paths(root):
    bench = write_lines(root / "b.jsonl", [line("c0"), "", line("c1", refs=[str(root / "refs" / "b.png")])])
    cases = read_benchmark(bench)
    assert [c.case_id for c in cases] == ["c0", "c1"]
    assert cases[0].references == ((root / "refs" / "a.png").resolve(), (root / "refs" / "b.png").resolve())
    assert cases[1].references == ((root / "refs" / "b.png").resolve(),)
    assert cases[0].seed == 1 and cases[0].prompt == "p"


@pytest.mark.parametrize(
    "bad, message",
    [
        ("{not json", "b.jsonl:2: invalid JSON"),
        (line("c1", refs=["refs/missing.png"]), "b.jsonl:2: reference image not found"),
        (line("c1", refs=["../outside.png"]), "b.jsonl:2: reference '../outside.png' uses '..'"),
        (line("c0"), "b.jsonl:2: duplicate case_id 'c0' (first on line 1)"),
        (line("c1", refs=[]), "b.jsonl:2: references must be a non-empty list"),
        (line("bad/id"), "b.jsonl:2: case_id 'bad/id'"),
        (line("c1", extra_key=3), "b.jsonl:2: unknown key(s) ['extra_key']"),
        (json.dumps({"case_id": "c1", "prompt": "p", "references": ["refs/a.png"]}), "b.jsonl:2: missing key(s) ['seed']"),
        (line("c1", seed="7"), "b.jsonl:2: seed must be an integer"),
    ],
)
def test_errors_name_the_line(root, bad, message):
    bench = write_lines(root / "b.jsonl", [line("c0"), bad])
    with pytest.raises(BenchmarkError) as err:
        read_benchmark(bench)
    assert message in str(err.value)


def test_symlink_escaping_the_root_is_refused(root, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside") / "x.png"
    outside.write_bytes(b"x")
    (root / "refs" / "link.png").symlink_to(outside)
    bench = write_lines(root / "b.jsonl", [line("c0", refs=["refs/link.png"])])
    with pytest.raises(BenchmarkError, match="outside the benchmark's folder"):
        read_benchmark(bench)


def test_empty_benchmark_is_an_error(root):
    with pytest.raises(BenchmarkError, match="no cases"):
        read_benchmark(write_lines(root / "b.jsonl", [""]))


def test_write_then_read_round_trips_with_relative_paths(root):
    cases = [Case("x", "a prompt", ((root / "refs" / "a.png").resolve(),), 3)]
    path = write_benchmark(root / "out.jsonl", cases)
    assert json.loads(path.read_text())["references"] == ["refs/a.png"]
    assert read_benchmark(path) == cases


def test_optional_targets_per_identity_round_trip(root):
    """`targets`: per identity, other photos of the person (copy-paste); an identity may have none."""
    bench = write_lines(root / "b.jsonl", [line("c0", targets=[["refs/b.png"], []]), line("c1")])
    with_targets, without = read_benchmark(bench)
    assert with_targets.targets == (((root / "refs" / "b.png").resolve(),), ())
    assert without.targets == ()
    assert write_benchmark(root / "again.jsonl", [with_targets, without]) and read_benchmark(root / "again.jsonl") == [
        with_targets, without]
    assert json.loads((root / "again.jsonl").read_text().splitlines()[0])["targets"] == [["refs/b.png"], []]
    assert "targets" not in json.loads((root / "again.jsonl").read_text().splitlines()[1])
    # ground_truth: a real clip of the case's people (any file path, resolved like the references)
    (case,) = read_benchmark(write_lines(root / "gt.jsonl", [line("c0", ground_truth="refs/a.png")]))
    assert case.ground_truth == (root / "refs" / "a.png").resolve() and with_targets.ground_truth is None
    assert json.loads(write_benchmark(root / "gt2.jsonl", [case]).read_text())["ground_truth"] == "refs/a.png"


@pytest.mark.parametrize("targets, message", [
    ([["refs/b.png"]], "one list of image paths per reference \\(2\\)"),
    (["refs/b.png", []], "one list of image paths per reference"),
    ([["refs/nope.png"], []], "reference image not found"),
])
def test_bad_targets_are_named(root, targets, message):
    bench = write_lines(root / "b.jsonl", [line("c0", targets=targets)])
    with pytest.raises(BenchmarkError, match=f"b.jsonl:1: .*{message}"):
        read_benchmark(bench)
