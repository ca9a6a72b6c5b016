"""The MLflow comparison a researcher opens, in headless Chromium: a committed project's `dvc repro`,
then two ablations by the README's queue command, then `python -m study.mlflow_stage ui`.

The experiment page opens on the runs table (not MLflow 3's GenAI overview); the table has one
top-level row per study run (the workspace's `dvc repro` and each ablation) with `ours`' headline
numbers; the comparison URL the command prints shows the three side by side with the changed params.
Chromium is driven over its DevTools protocol (aiohttp's websocket client) to read the page's
address and text once the single-page app has rendered.

Slow: one smaller-than-tiny `dvc repro` and two queued experiments that retrain stage 2: 1610 s on
2 loaded cores, the browser part 45 s of it (docs/measurements.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from ingredients.config import load_merged
from tests.e2e.project import ROOT, commit, dvc, env, make_repo_copy, shell

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600),
              pytest.mark.skipif(shutil.which("chromium") is None,
                                 reason="Debian's chromium is not installed (scripts/setup.sh installs it)")]

ABLATIONS = ("no_routing_loss", "mse_routing_loss")
QUEUE = "python -m experiments.ablations queue experiments/no_routing_loss.yaml experiments/mse_routing_loss.yaml --run"
UI = "python -m study.mlflow_stage ui --port {port}"  # README, "Results and MLflow" (another port than 5000)
# a headline number that differs between the study runs at the 3 decimals the UI shows: the tiny
# model's noise samples hold no face (face_sim is 0 everywhere), their motion follows the weights
HEADLINE = "ours/dynamic_degree/score"


def store_counts(db: Path) -> dict[str, int]:
    """Runs in the store, and those without a parent (the runs table's rows)."""
    con = sqlite3.connect(db)
    try:
        runs = con.execute("select count(*) from runs").fetchone()[0]
        top = con.execute("select count(*) from runs r where not exists (select 1 from tags t where "
                          "t.run_uuid = r.run_uuid and t.key = 'mlflow.parentRunId')").fetchone()[0]
    finally:
        con.close()
    return {"runs": runs, "top_level": top}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A committed project after `dvc repro`, a no-op `dvc repro` and the two ablations; the store's
    counts after each step."""
    params = load_merged(ROOT / "params.yaml", (ROOT / "tests/e2e/smaller_than_tiny.yaml",))
    project = make_repo_copy(tmp_path_factory.mktemp("mlflow_ui"), params)
    run = dvc(project, "repro", timeout=3000)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    counts = {"repro": store_counts(project / "mlflow.db")}
    commit(project, "baseline: dvc repro")
    run = dvc(project, "repro")
    assert run.returncode == 0 and "Running stage" not in run.stdout, run.stdout
    counts["noop_repro"] = store_counts(project / "mlflow.db")
    run = shell(project, QUEUE)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    counts["ablations"] = store_counts(project / "mlflow.db")
    return project, counts


def test_the_store_has_one_top_level_run_per_study_run(project):
    project, counts = project
    assert counts["repro"]["top_level"] == 1  # the workspace's dvc repro: every stage and method nested
    assert counts["noop_repro"] == counts["repro"]  # a repro DVC skips logs nothing
    assert counts["ablations"]["top_level"] == 1 + len(ABLATIONS)
    assert counts["ablations"]["runs"] > counts["repro"]["runs"]


class Browser:
    """Headless Chromium over the DevTools protocol: open a URL, run JavaScript in the page, read it."""

    def __init__(self, profile: Path):
        port_file = profile / "DevToolsActivePort"  # chromium writes its port here
        port_file.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0",
             f"--user-data-dir={profile}", "--window-size=5000,4000", "about:blank"],  # every column and row drawn
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while not port_file.is_file() or not port_file.read_text().strip():
                assert self.proc.poll() is None and time.monotonic() < deadline, "chromium did not start"
                time.sleep(0.2)
            port = port_file.read_text().split()[0]
            pages = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
            self.ws_url = next(p["webSocketDebuggerUrl"] for p in pages if p["type"] == "page")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=30)

    def _call(self, method: str, **params):
        async def call():
            import aiohttp

            async with aiohttp.ClientSession() as session, session.ws_connect(self.ws_url, max_msg_size=0) as ws:
                await ws.send_json({"id": 1, "method": method, "params": params})
                async for msg in ws:
                    data = json.loads(msg.data)
                    if data.get("id") == 1:
                        assert "error" not in data, data
                        return data["result"]
                raise AssertionError("DevTools connection closed")

        return asyncio.run(call())

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page."""
        return self._call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def text(self) -> str:
        return self.evaluate("document.body ? document.body.innerText : ''") or ""

    def open(self, url: str, ready, timeout: float = 180) -> str:
        """Navigate to `url` and wait until `ready(page text)`; returns the page's address."""
        self._call("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        while not ready(text := self.text()):
            assert time.monotonic() < deadline, f"{url}: not ready within {timeout} s: {text[:2000]}"
            time.sleep(1)
        time.sleep(2)  # let the page finish rendering
        return self.evaluate("location.href")

    def screenshot(self, path: Path) -> None:
        import base64

        path.write_bytes(base64.b64decode(self._call("Page.captureScreenshot", format="png")["data"]))


# the runs table's rows: ag-grid draws a row's pinned and scrolled cells in separate elements of one row-index
TABLE_ROWS = """JSON.stringify(Object.values([...document.querySelectorAll('[role=row][row-index]')].reduce((rows, r) => {
    const i = r.getAttribute('row-index'); rows[i] = (rows[i] || []).concat(r.innerText.split('\\n')); return rows; }, {})))"""
# what a user does to show a metric in the table: Columns, then tick the metric
SHOW_COLUMN = """(() => {{
    [...document.querySelectorAll('button')].find(b => b.innerText.trim() === 'Columns').click();
    const items = [...document.querySelectorAll('span')].filter(e => !e.children.length && e.textContent.trim() === '{name}');
    items.forEach(e => e.click());
    document.body.click();
    return items.length; }})()"""


def shown(value: float, texts: list[str]) -> bool:
    """Whether one of `texts` is `value` as the UI rounds it (a decimal number)."""
    for text in texts:
        if re.fullmatch(r"-?\d+\.\d+", text.strip()):
            decimals = len(text.strip().split(".")[1])
            if abs(float(text) - value) <= 0.5 * 10 ** -decimals + 1e-12:
                return True
    return False


def parent_metrics(project: Path, name: str) -> dict[str, float]:
    """The metrics of study run `name`'s parent run in the project's store."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("ingredients")
    (run,) = client.search_runs([experiment.experiment_id], f"tags.study_run = '{name}'")
    return run.data.metrics


@pytest.fixture(scope="module")
def ui(project, tmp_path_factory):
    """The documented UI command on a free port; yields (its printed lines, headless chromium)."""
    import socket

    project, _ = project
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(["bash", "-c", UI.format(port=port)], cwd=project,
                              env={**env(project), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    browser = None
    try:
        printed = [server.stdout.readline() for _ in range(2)]  # printed before the UI starts
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except OSError:
                assert server.poll() is None, "the UI command exited before the UI answered"
                assert time.monotonic() < deadline, "the UI did not answer within 120 s"
                time.sleep(1)
        browser = Browser(tmp_path_factory.mktemp("chromium"))
        yield printed, browser
    finally:
        if browser is not None:
            browser.close()
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_the_ui_opens_on_the_runs_table_with_one_row_per_study_run_and_ours_numbers(ui, project, tmp_path):
    printed, browser = ui
    project, _ = project
    runs_url = re.search(r"(http://\S+/runs\S*)\s*$", printed[0]).group(1)
    href = browser.open(runs_url, lambda text: all(name in text for name in ("workspace", *ABLATIONS)))
    assert "/runs" in href and "workflowType=machine_learning" in href, href  # the runs table, not GenAI's overview
    assert "No data available" not in browser.text()
    rows = json.loads(browser.evaluate(TABLE_ROWS))
    names = sorted(cell for row in rows for cell in row if cell in ("workspace", *ABLATIONS))
    assert len(rows) == 3 and names == sorted(("workspace", *ABLATIONS)), rows  # stage runs nested, collapsed
    for row in rows:  # each row names the data its stages read (DVC paths)
        assert any("data/curated" in cell or "models/" in cell for cell in row), row
    assert browser.evaluate(SHOW_COLUMN.format(name=HEADLINE)) == 1
    time.sleep(3)
    rows = json.loads(browser.evaluate(TABLE_ROWS))
    browser.screenshot(tmp_path / "runs.png")
    for name in ("workspace", *ABLATIONS):
        (row,) = [row for row in rows if name in row]
        assert shown(parent_metrics(project, name)[HEADLINE], row), (name, row)


def test_the_comparison_url_shows_the_study_runs_side_by_side(ui, project, tmp_path):
    printed, browser = ui
    project, _ = project
    compare_url = re.search(r"(http://\S+/#/compare-runs\?\S+)\s*$", printed[1]).group(1)
    browser.open(compare_url, lambda text: "Comparing 3 Runs" in text and "Run details" in text)
    text = browser.text()
    assert re.search(r"Run Name:\s+workspace\s+no_routing_loss\s+mse_routing_loss", text), text[:3000]
    params = text[text.index("\nParameters\n"):text.index("\nMetrics\n")]
    assert re.search(r"train\.stage2\.routing\.kind\t\t\tmse", params) and re.search(
        r"train\.stage2\.routing\.weight\t\t0\.0\t", params), params  # only what each ablation changed
    # the metrics table draws its first rows only: "Show diff only" (as a user would) keeps those that differ
    assert browser.evaluate("document.querySelector('[aria-label=\"Metrics - Show diff only\"]').click() ?? 1") == 1
    time.sleep(3)
    browser.screenshot(tmp_path / "compare.png")
    text = browser.text()
    lines = [x for x in text[text.index("\nMetrics\n"):text.index("\nArtifacts\n")].split("\n")
             if x and x not in ("Metrics", "Show diff only")]
    names, cells = [x for x in lines if "/" in x], [x for x in lines if "/" not in x]  # names, then row by row
    assert HEADLINE in names and len(cells) == 3 * len(names), lines
    row = cells[3 * names.index(HEADLINE):][:3]
    values = [parent_metrics(project, name)[HEADLINE] for name in ("workspace", *ABLATIONS)]
    assert len(set(row)) == 3 and all(shown(v, [cell]) for v, cell in zip(values, row)), (row, values)
