"""Checkpoint files: pickle-free RNG states, optimizer/scheduler states that load with
weights_only=True, atomic placement, 'latest' resolution, and errors for missing checkpoints."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from diffusers.optimization import get_scheduler

from ingredients.training import checkpoint as ckpt


def _draws():
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_rng_state_roundtrip_without_pickle(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.randn()  # leave a cached gaussian in numpy's state
    ckpt.write_rng_state(tmp_path, rank=0)
    expected = _draws()
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    ckpt.restore_rng_state(*ckpt.read_rng_state(tmp_path, 0))
    assert _draws() == expected
    # the file is safetensors: no pickle opcodes, metadata is JSON text
    raw = (tmp_path / "rng_rank0.safetensors").read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    assert set(header) == {"__metadata__", "torch", "numpy_key"}
    assert json.loads(header["__metadata__"]["python"])["version"] == 3


def _trained_optimizer():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW([{"params": [model.weight], "lr": 1e-3}, {"params": [model.bias], "lr": 1e-4}], betas=(0.9, 0.99))
    sched = get_scheduler("cosine", opt, num_warmup_steps=2, num_training_steps=10)
    for _ in range(3):
        model(torch.randn(2, 4)).square().mean().backward()
        opt.step(), sched.step(), opt.zero_grad()
    return model, opt, sched


def test_checkpoint_files_roundtrip_and_load_with_weights_only(tmp_path):
    model, opt, sched = _trained_optimizer()
    root = tmp_path / "checkpoints"
    temp = ckpt.temp_checkpoint_dir(root, 3)
    temp.mkdir(parents=True)
    trainable = {"weight": model.weight.detach().clone(), "bias": model.bias.detach().clone()}
    ckpt.write_checkpoint_files(temp, trainable, opt.state_dict(), sched.state_dict(), {"step": 3, "params": {"lr": 1}},
                                ema_shadow={"weight": torch.ones(3, 4), "bias": torch.zeros(3)})
    ckpt.write_rng_state(temp, 0)
    assert ckpt.list_checkpoints(root) == []  # a temp folder is not a checkpoint
    final = ckpt.move_into_place(temp, root / ckpt.checkpoint_name(3))
    assert not temp.exists() and final.name == "step-00000003"
    # the states load with the safe unpickler
    torch.load(final / "optimizer.pt", weights_only=True)
    torch.load(final / "lr_scheduler.pt", weights_only=True)
    loaded = ckpt.load_checkpoint(final)
    assert loaded.step == 3 and loaded.state["format"] == ckpt.CHECKPOINT_FORMAT
    torch.testing.assert_close(loaded.trainable["weight"], model.weight.detach())
    torch.testing.assert_close(loaded.ema["weight"], torch.ones(3, 4))
    # a fresh optimizer + scheduler continue exactly where the saved ones are
    model2 = torch.nn.Linear(4, 3)
    model2.load_state_dict({"weight": loaded.trainable["weight"], "bias": loaded.trainable["bias"]})
    opt2 = torch.optim.AdamW([{"params": [model2.weight], "lr": 1e-3}, {"params": [model2.bias], "lr": 1e-4}], betas=(0.9, 0.99))
    sched2 = get_scheduler("cosine", opt2, num_warmup_steps=2, num_training_steps=10)
    opt2.load_state_dict(loaded.optimizer)
    sched2.load_state_dict(loaded.lr_scheduler)
    x = torch.randn(2, 4)
    for m, o, s in ((model, opt, sched), (model2, opt2, sched2)):
        m(x).square().mean().backward()
        o.step(), s.step()
    torch.testing.assert_close(model2.weight, model.weight, rtol=0, atol=0)
    assert sched2.get_last_lr() == sched.get_last_lr()


def test_resolve_resume_latest_and_missing(tmp_path):
    root = tmp_path / "checkpoints"
    with pytest.raises(FileNotFoundError, match="no complete checkpoint under"):
        ckpt.resolve_resume("latest", root)
    assert ckpt.resolve_resume("auto", root) is None  # 'auto' (a restarting launch): none yet, a fresh start
    with pytest.raises(FileNotFoundError, match=r"not a complete checkpoint \(no .*step-00000005/state.json\)"):
        ckpt.resolve_resume(root / "step-00000005", root)
    for step in (2, 4, 10):
        (root / ckpt.checkpoint_name(step)).mkdir(parents=True)
        (root / ckpt.checkpoint_name(step) / "state.json").write_text("{}")
    (root / "step-00000020").mkdir()  # no state.json: incomplete, ignored
    ckpt.temp_checkpoint_dir(root, 30).mkdir()
    assert ckpt.resolve_resume("latest", root).name == "step-00000010"
    assert ckpt.resolve_resume("auto", root).name == "step-00000010"
    ckpt.prune_checkpoints(root, keep=2)
    assert [s for s, _ in ckpt.list_checkpoints(root)] == [4, 10]
    with pytest.raises(FileNotFoundError, match="optimizer.pt is missing"):
        (root / "step-00000010" / "state.json").write_text(json.dumps({"format": ckpt.CHECKPOINT_FORMAT, "step": 10}))
        (root / "step-00000010" / "trainable.safetensors").write_bytes(b"")
        ckpt.load_checkpoint(root / "step-00000010")


def test_params_differences_lists_dotted_keys():
    saved = {"steps": 10, "lr": 1e-3, "train": {"backbone": "frozen", "lora_rank": 8}, "checkpoint": {"every": 5}}
    now = {"steps": 20, "lr": 2e-3, "train": {"backbone": "lora", "lora_rank": 8}, "checkpoint": {"every": 2}}
    diffs = ckpt.params_differences(saved, now, {"steps", "checkpoint"})
    assert diffs == ["lr: checkpoint 0.001, now 0.002", "train.backbone: checkpoint 'frozen', now 'lora'"]
