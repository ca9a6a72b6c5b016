"""Untrusted weight and state files: every loader refuses a pickle that would run code, names the
file, and the payload never runs; no loader in the code base unpickles arbitrary objects."""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ingredients.files.weights_file import UnsafeWeightsError, read_weights

REPO = Path(__file__).resolve().parents[2]


class _Payload:
    """Unpickling this runs os.makedirs(marker): a harmless stand-in for a malicious checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


@pytest.fixture()
def evil(tmp_path) -> tuple[Path, Path]:
    """(a torch file whose state dict carries the payload, the marker its unpickling would create)."""
    marker = tmp_path / "payload_ran"
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(2), "extra": _Payload(marker)}, path)
    return path, marker


def test_the_payload_is_live_under_plain_unpickling(evil):
    path, marker = evil
    torch.load(path, weights_only=False)  # what a careless loader would do
    assert marker.is_dir()


def test_read_weights_refuses_the_payload_and_names_the_file(evil):
    path, marker = evil
    with pytest.raises(UnsafeWeightsError, match=rf"refused to load {path}.*os\.makedirs"):
        read_weights(path)
    assert not marker.exists()


def test_plain_state_dicts_and_safetensors_load(tmp_path):
    state = {"a.weight": torch.arange(6.0).view(2, 3), "a.bias": torch.tensor([1.5, -2.0])}
    torch.save(state, tmp_path / "plain.bin")
    save_file(state, str(tmp_path / "plain.safetensors"))
    for name in ("plain.bin", "plain.safetensors"):
        loaded = read_weights(tmp_path / name)
        assert set(loaded) == set(state)
        for key, value in state.items():
            assert torch.equal(loaded[key], value)


def test_truncated_and_missing_files_are_named(tmp_path):
    torch.save({"w": torch.ones(1000)}, tmp_path / "whole.pt")
    data = (tmp_path / "whole.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "cut.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    for name in ("cut.pt", "cut.safetensors"):
        with pytest.raises(ValueError, match=str(tmp_path / name)):
            read_weights(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        read_weights(tmp_path / "missing.pt")


def test_training_checkpoint_with_a_malicious_optimizer_state_is_refused(evil, tmp_path):
    from ingredients.training import checkpoint as ckpt

    path, marker = evil
    folder = tmp_path / "checkpoints" / ckpt.checkpoint_name(5)
    folder.mkdir(parents=True)
    (folder / "state.json").write_text(json.dumps({"format": ckpt.CHECKPOINT_FORMAT, "step": 5, "params": {}}))
    save_file({"w": torch.zeros(2)}, str(folder / "trainable.safetensors"))
    (folder / "optimizer.pt").write_bytes(path.read_bytes())
    torch.save({"last_epoch": 5}, folder / "lr_scheduler.pt")
    with pytest.raises(UnsafeWeightsError, match="optimizer.pt"):
        ckpt.load_checkpoint(folder)
    assert not marker.exists()


def test_face_and_metric_weight_loaders_refuse_the_payload(evil):
    from eval.optical_flow import load_raft
    from ingredients.faces.curricularface_backend import CheckpointMismatchError, load_ir101
    from ingredients.faces.eva_clip import read_state_dict

    path, marker = evil
    with pytest.raises(CheckpointMismatchError, match=rf"refused to load {path}"):
        load_ir101(path)
    with pytest.raises(UnsafeWeightsError, match=str(path)):
        read_state_dict(path)
    with pytest.raises(UnsafeWeightsError, match=str(path)):
        load_raft.__wrapped__("raft_small", str(path))
    assert not marker.exists()


def _unsafe_loads(tree: ast.AST) -> list[tuple[int, str]]:
    """Calls that can unpickle arbitrary objects: pickle/dill/joblib loads, torch.load without
    weights_only=True, numpy loads with allow_pickle=True."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
        if name in {"pickle.load", "pickle.loads", "dill.load", "joblib.load", "cloudpickle.load"}:
            found.append((node.lineno, name))
        elif name == "torch.load" and keywords.get("weights_only") != "True":
            found.append((node.lineno, f"{name} without weights_only=True"))
        elif name in {"np.load", "numpy.load"} and keywords.get("allow_pickle") == "True":
            found.append((node.lineno, f"{name}(allow_pickle=True)"))
    return found


def test_the_scanner_finds_unsafe_loads():
    source = "import torch, pickle, numpy as np\ntorch.load(p)\npickle.loads(b)\nnp.load(p, allow_pickle=True)\ntorch.load(p, weights_only=True)\n"
    assert [line for line, _ in _unsafe_loads(ast.parse(source))] == [2, 3, 4]


def test_no_code_path_unpickles_arbitrary_objects():
    hits = []
    for package in ("ingredients", "eval"):
        for path in sorted((REPO / package).rglob("*.py")):
            hits += [f"{path.relative_to(REPO)}:{line}: {what}" for line, what in _unsafe_loads(ast.parse(path.read_text()))]
    assert hits == []
