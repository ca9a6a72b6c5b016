"""The MLflow comparison a researcher opens, in headless Chromium: a committed project's `dvc repro`,
then two ablations by the README's queue command, then `python -m study.mlflow_stage ui`.

The experiment page opens on the runs table (not MLflow 3's GenAI overview); the table has one
top-level row per study run (the workspace's `dvc repro` and each ablation) with `ours`' headline
numbers; the comparison URL the command prints shows the three side by side with the changed params.
Chromium is driven over its DevTools protocol (aiohttp's websocket client) to read the page's
address and text once the single-page app has rendered.

Slow: one smaller-than-tiny `dvc repro` and two queued experiments that retrain stage 2, about
20 minutes on 2 loaded cores (docs/measurements.md).
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
    """Headless Chromium over the DevTools protocol: open a URL, read the page's address and text."""

    def __init__(self, profile: Path):
        self.proc = subprocess.Popen(
            ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0",
             f"--user-data-dir={profile}", "--window-size=1600,1000", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not port_file.is_file() or not port_file.read_text().strip():
            assert self.proc.poll() is None and time.monotonic() < deadline, "chromium did not start"
            time.sleep(0.2)
        port = port_file.read_text().split()[0]
        pages = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
        self.ws_url = next(p["webSocketDebuggerUrl"] for p in pages if p["type"] == "page")

    def close(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=30)

    def open(self, url: str, ready, timeout: float = 120, screenshot: Path | None = None) -> dict:
        """Navigate to `url`; poll {"href", "text"} until `ready(page)` holds; returns that page."""
        return asyncio.run(self._open(url, ready, timeout, screenshot))

    async def _open(self, url, ready, timeout, screenshot):
        import aiohttp

        async with aiohttp.ClientSession() as session, session.ws_connect(self.ws_url, max_msg_size=0) as ws:
            ids = iter(range(1, 10**6))

            async def call(method: str, **params):
                call_id = next(ids)
                await ws.send_json({"id": call_id, "method": method, "params": params})
                async for msg in ws:
                    data = json.loads(msg.data)
                    if data.get("id") == call_id:
                        return data.get("result", {})
                raise AssertionError("DevTools connection closed")

            await call("Page.navigate", url=url)
            deadline = time.monotonic() + timeout
            page = {}
            while time.monotonic() < deadline:
                await asyncio.sleep(1)
                result = await call("Runtime.evaluate", returnByValue=True, expression=(
                    "JSON.stringify({href: location.href, text: document.body ? document.body.innerText : ''})"))
                page = json.loads(result.get("result", {}).get("value") or "{}")
                if page and ready(page):
                    await asyncio.sleep(2)  # let the table finish rendering
                    result = await call("Runtime.evaluate", returnByValue=True, expression=(
                        "JSON.stringify({href: location.href, text: document.body.innerText})"))
                    page = json.loads(result["result"]["value"])
                    if screenshot is not None:
                        import base64

                        shot = await call("Page.captureScreenshot", format="png")
                        screenshot.write_bytes(base64.b64decode(shot["data"]))
                    return page
            raise AssertionError(f"{url}: not ready within {timeout} s; page was {page.get('href')}: "
                                 f"{page.get('text', '')[:2000]}")


@pytest.fixture(scope="module")
def ui(project, tmp_path_factory):
    """The documented UI command on a free port; yields (printed output, base URL, browser)."""
    import socket

    project, _ = project
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(["bash", "-c", UI.format(port=port)], cwd=project,
                              env={**env(project), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    browser = None
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(base + "/health", timeout=1)
                break
            except OSError:
                assert server.poll() is None, "the UI command exited before the UI answered"
                assert time.monotonic() < deadline, "the UI did not answer within 120 s"
                time.sleep(1)
        printed = [server.stdout.readline() for _ in range(2)]  # printed before the UI starts
        browser = Browser(tmp_path_factory.mktemp("chromium"))
        yield printed, base, browser
    finally:
        if browser is not None:
            browser.close()
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_the_experiment_opens_on_the_runs_table_with_one_row_per_study_run(ui, tmp_path):
    printed, base, browser = ui
    runs_url = re.search(r"(http://\S+/runs)\s*$", printed[0]).group(1)
    experiment_page = runs_url.removesuffix("/runs")  # what a click on the experiment's name opens
    page = browser.open(experiment_page, lambda p: all(n in p["text"] for n in ("workspace", *ABLATIONS)),
                        screenshot=tmp_path / "runs.png")
    assert page["href"].endswith("/runs"), page["href"]  # redirected to the runs tab
    text = page["text"]
    assert "No data available" not in text and "Traces 0" not in text  # not the GenAI overview
    for stage_run in ("stage2", "curate", "plan"):  # nested: collapsed under their study run's row
        assert not re.search(rf"^{stage_run}$", text, re.M), stage_run
    assert "ours/face_sim/dlib" in text  # the headline column


def test_the_comparison_url_shows_the_study_runs_side_by_side(ui, project, tmp_path):
    printed, base, browser = ui
    project, _ = project
    compare_url = re.search(r"(http://\S+/#/compare-runs\?\S+)\s*$", printed[1]).group(1)
    page = browser.open(compare_url, lambda p: "ours/face_sim/dlib" in p["text"] and "no_routing_loss" in p["text"],
                        screenshot=tmp_path / "compare.png")
    text = page["text"]
    for name in ("workspace", *ABLATIONS):
        assert name in text, name
    assert "train.stage2.routing.weight" in text and "train.stage2.routing.kind" in text  # the changed params
    metrics = json.loads((project / "outputs/eval/metrics.json").read_text())  # the workspace's evaluation
    assert f"{metrics['ours']['face_sim/dlib']:.4g}"[:5] in text.replace(",", "")
