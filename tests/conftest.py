"""Shared test fixtures: the reference-parity folder, the executed-command record, small helpers.

The command record (tests/command_record.py): for the whole session every command the test process
starts (`subprocess.Popen`, so `subprocess.run` and every launcher built on it) is appended, with the
running test's node id, to `$INGREDIENTS_COMMAND_RECORD` (set here to `<basetemp>/commands.jsonl` when
unset; `.ci/run` sets one file for all its pytest runs), and so is every command line a project CLI parses
in this process (a test calling a module's `main([...])`: its argparse `parse_args`).
tests/test_documented_commands.py reads the record; its tests run last in the session, after every test
whose commands they check.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from tests import command_record

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """`shared/` beside the checkout (or $INGREDIENTS_SHARED)."""
    path = Path(os.environ.get("INGREDIENTS_SHARED", REPO_ROOT.parent / "shared"))
    if not (path / "fixtures").is_dir():
        raise FileNotFoundError(f"test fixtures not found at {path}/fixtures; set INGREDIENTS_SHARED to the shared/ folder")
    return path


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    return shared_dir() / "fixtures" / "reference_parity"


@pytest.fixture(scope="session")
def parity_config(parity_dir) -> dict:
    return json.loads((parity_dir / "config.json").read_text())


# ------------------------------------------------------------------ the tiny data, built once per session

# the first four synth recipes: clean videos with 1, 2 and 3 identities, two of them with a mid-clip cut
TINY_INDICES = [0, 1, 2, 3]
TINY_SEED = 0


@pytest.fixture(scope="session")
def tiny_raw(tmp_path_factory) -> Path:
    """The 4-video tiny raw set (`synthesize(seed=0, indices=[0, 1, 2, 3])`), shared by the data and the
    training tests. Read only."""
    from ingredients.data.synth import synthesize

    root = tmp_path_factory.mktemp("tiny") / "raw"
    synthesize(root, seed=TINY_SEED, indices=TINY_INDICES)
    return root


@pytest.fixture(scope="session")
def tiny_curated(tiny_raw) -> tuple[Path, dict]:
    """(output folder, report) of an uninterrupted in-process curation of `tiny_raw` with the default
    CurationParams: the data tests check it, the training tests train on its manifest. Read only."""
    from ingredients.data.curate import curate
    from ingredients.data.curation_params import CurationParams

    out = tiny_raw.parent / "curated"
    report = curate(tiny_raw, out, CurationParams())
    return out, report


# ------------------------------------------------------------------ the README's first command, once per session

FIRST_COMMAND = "bash scripts/setup.sh && source .venv/bin/activate && dvc repro"  # README, first command


@pytest.fixture(scope="session")
def readme_project(tmp_path_factory) -> Path:
    """The README's first command, verbatim, run once per session in a committed copy of the repository (a
    fresh clone's layout, tests/e2e/project.py `make_repo_copy`) whose `.venv` is this environment, so
    `scripts/setup.sh` finds it up to date and the tiny `dvc repro` runs in full. Every test that reads a
    whole run's outputs (models/, outputs/, mlflow.db, dvc.lock) takes it: the README's commands after
    the first (tests/e2e/test_readme_commands.py) and the pipeline's checks (tests/e2e/test_pipeline.py),
    all slow, run by `.ci/run` after the default suite. A test that edits the project restores what it
    edited, or works on a copy. `first_command.log` holds the run's output."""
    import sys

    from tests.e2e.project import make_repo_copy, shell

    project = make_repo_copy(tmp_path_factory.mktemp("readme"))
    os.symlink(Path(sys.executable).parents[1], project / ".venv")
    with command_record.in_fixture("readme_project"):  # the record names this fixture, whichever test came first
        run = shell(project, FIRST_COMMAND)
    (project / "first_command.log").write_text(run.stdout + run.stderr)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "setup: .venv is up to date" in run.stdout, "run `bash scripts/setup.sh` in the repository first"
    return project


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.manual_seed(0)
    yield


# ------------------------------------------------------------------ the executed-command record, two workers

DOCS_TEST = "tests/test_documented_commands.py"


def _is_controller(config) -> bool:
    """This process hands the tests to pytest-xdist workers (`-n N`, N > 0: the README's test command)."""
    return not hasattr(config, "workerinput") and bool(getattr(config.option, "numprocesses", None))


@pytest.hookimpl(tryfirst=True)  # before xdist turns `-n 2` into workers
def pytest_cmdline_main(config):
    """A benchmark run (`--benchmark-enable`, the speed docs' commands) runs in one process: under xdist
    pytest-benchmark disables itself, and two workers would share the cores it measures."""
    if config.getoption("benchmark_enable", False):
        config.option.numprocesses = 0


@pytest.hookimpl(trylast=True)  # after the tmp_path plugin made config._tmp_path_factory
def pytest_configure(config):
    """With workers: one command record for all of them (the workers inherit the environment, and their
    tmp folders lie in this basetemp, as xdist makes them), and one torch thread a worker, so two workers
    share two cores instead of four spin-waiting threads (their commands inherit it too)."""
    if _is_controller(config):
        os.environ.setdefault(command_record.RECORD_ENV, str(config._tmp_path_factory.getbasetemp() / "commands.jsonl"))
        os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session", autouse=True)
def _command_record(tmp_path_factory):
    """Records every command the session starts (first fixture of the session: before any other)."""
    if not os.environ.get(command_record.RECORD_ENV):
        os.environ[command_record.RECORD_ENV] = str(tmp_path_factory.getbasetemp() / "commands.jsonl")
    with command_record.Recording():
        yield command_record.record_path()


# The test files that take longest (seconds of the whole file on 2 idle cores, one process, 2026-12-07):
# handed to the workers first, so that neither waits for the other's long file at the end. A file missing
# here only runs later; the order changes no result.
LONGEST_FIRST = (
    "tests/plan/test_full_size_steps.py",  # 40
    "tests/training/test_resume.py",  # 37
    "tests/data/test_curate_ray.py",  # 28
    "tests/eval/test_run.py",  # 26
    "tests/data/test_curate.py",  # 21
    "tests/eval/test_report.py",  # 16
    "tests/data/test_sources.py",  # 15
    "tests/plan/test_training_step.py",  # 15
    "tests/training/test_train_tiny.py",  # 12
    "tests/data/test_curate_robustness.py",  # 11
)


def _file_rank(item) -> int:
    path = item.path.relative_to(REPO_ROOT).as_posix() if item.path.is_relative_to(REPO_ROOT) else ""
    return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)


def pytest_collection_modifyitems(session, config, items):
    """The longest test files first (`LONGEST_FIRST`; a stable sort keeps each file's own order). The
    documentation test checks the record of the tests before it: it runs last, and with workers it runs in
    none of them but after them all (`pytest_sessionfinish`), on their one record."""
    last = [item for item in items if str(item.path).endswith(DOCS_TEST)]
    items[:] = sorted((item for item in items if item not in last), key=_file_rank)
    if hasattr(config, "workerinput"):
        config.hook.pytest_deselected(items=last)
    else:
        items.extend(last)


def _covers_docs_test(config) -> bool:
    target = (REPO_ROOT / DOCS_TEST).resolve()
    for arg in config.args:
        path = (Path(config.invocation_params.dir) / arg.split("::")[0]).resolve()
        if path == target or path in target.parents:
            return True
    return False


def pytest_sessionfinish(session, exitstatus):
    """With workers: once they all finished, the documentation test runs in one process of its own (same
    record, same marker and keyword selection); its failure fails the session."""
    config = session.config
    if not _is_controller(config) or config.option.collectonly or exitstatus == pytest.ExitCode.INTERRUPTED \
            or not _covers_docs_test(config):
        return
    import subprocess
    import sys

    args = [sys.executable, "-m", "pytest", "-n", "0", "-p", "no:cacheprovider", "-m", config.option.markexpr, DOCS_TEST]
    if config.option.keyword:
        args[-1:-1] = ["-k", config.option.keyword]
    run = subprocess.run(args, cwd=REPO_ROOT, capture_output=True, text=True)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_sep("=", f"{DOCS_TEST}, after the workers, on their record")
        reporter.write(run.stdout[-20000:] + run.stderr[-5000:])
    if run.returncode not in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if reporter is not None:  # the count below is the workers' tests only: say it before it
            reporter.write_sep("=", f"{DOCS_TEST} FAILED (exit {run.returncode}): the session fails", red=True)


def pytest_runtest_logreport(report):
    if report.when == "call" or (report.when == "setup" and not report.passed):
        command_record.record_outcome(report.nodeid, report.outcome)


def pytest_terminal_summary(terminalreporter):
    path = command_record.record_path()
    if path is not None and path.is_file():
        terminalreporter.write_line(f"executed-command record: {path}")
