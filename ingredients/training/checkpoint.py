"""Training checkpoints that carry their own config, written atomically, loaded without pickle.

A checkpoint is a folder `<out>/checkpoints/step-00000040/`:
    trainable.safetensors   the trainable weights by parameter name
    ema.safetensors         EMA shadow weights by the same names (when EMA is on)
    optimizer.pt            optimizer state_dict (torch.save; loaded with weights_only=True);
                            optimizer_rank{R}.pt per rank instead when FSDP/DeepSpeed shard it
    lr_scheduler.pt         lr scheduler state_dict (same)
    rng_rank{R}.safetensors torch (and CUDA) generator states + numpy's MT19937 key; python's
                            `random` state and numpy's scalars as JSON in the file's metadata
    state.json              step, micro-step, stage, resolved params, git revision, init folder,
                            number of processes, EMA scalars; written last
It is assembled in `.step-00000040.tmp/` and renamed into place, so a reader never sees a partial
checkpoint; a crash leaves at most a temp folder, which the next save of that step replaces, and
which resuming removes (`remove_stale_checkpoint_temps`) so it is not cached with the folder.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ingredients.files.atomic import atomic_path, remove_stale_temps, write_json
from ingredients.files.weights_file import read_weights

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
_NAME = re.compile(r"^step-(\d{8})$")
_TEMP_NAME = re.compile(r"^\.(step-\d{8})\.(tmp|old)$")


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def temp_checkpoint_dir(root: str | os.PathLike, step: int) -> Path:
    return Path(root) / f".{checkpoint_name(step)}.tmp"


def list_checkpoints(root: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints under `root` (those with state.json), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        m = _NAME.match(child.name)
        if m and (child / "state.json").is_file():
            found.append((int(m.group(1)), child))
    return sorted(found)


def remove_stale_checkpoint_temps(root: str | os.PathLike) -> int:
    """Clear what saves killed midway left under `root`; returns how many entries it handled.

    `.step-N.tmp/` (being assembled) is removed; `.step-N.old/` (a checkpoint being replaced by a
    new save of the same step) is moved back when the new one never arrived, else removed; temps of
    atomic writes are removed too. Only for a folder no live run is saving into.
    """
    root = Path(root)
    if not root.is_dir():
        return 0
    handled = remove_stale_temps(root, recursive=False)
    for child in sorted(root.iterdir()):
        m = _TEMP_NAME.match(child.name)
        if not m or not child.is_dir():
            continue
        final = root / m.group(1)
        if m.group(2) == "old" and not final.exists() and (child / "state.json").is_file():
            try:
                os.replace(child, final)
                logger.warning("restored checkpoint %s from %s (its replacement was interrupted)", final, child.name)
            except FileNotFoundError:  # another process restored it first
                pass
        else:
            shutil.rmtree(child, ignore_errors=True)
        handled += 1
    if handled:
        logger.info("removed or restored %d leftover(s) of interrupted checkpoint saves under %s", handled, root)
    return handled


def resolve_resume(resume: str | os.PathLike, root: str | os.PathLike) -> Path | None:
    """The checkpoint folder to resume from: 'latest' (newest under `root`), 'auto' (the newest under
    `root` when there is one, else None: a fresh start) or a path.

    'auto' is what a launch that restarts the stage by itself passes (dvc.yaml, Ray Train's restart
    after a lost worker): the first attempt finds no checkpoint, a restarted one its own last. For
    'latest' and a path a missing checkpoint is an error, never a silent fresh start. What saves of
    the killed run left under `root` is cleared first (`remove_stale_checkpoint_temps`): the resumed
    run writes there.
    """
    remove_stale_checkpoint_temps(root)
    if str(resume) == "auto":
        found = list_checkpoints(root)
        return found[-1][1] if found else None
    if str(resume) == "latest":
        found = list_checkpoints(root)
        if not found:
            raise FileNotFoundError(
                f"--resume latest: no complete checkpoint under {root}; run without --resume to start fresh"
            )
        return found[-1][1]
    path = Path(resume)
    if not (path / "state.json").is_file():
        raise FileNotFoundError(
            f"--resume {path}: not a complete checkpoint (no {path / 'state.json'}); "
            f"checkpoints are folders like {Path(root) / checkpoint_name(0)}, or pass 'latest'"
        )
    return path


# ------------------------------------------------------------------------------------------ RNG

def capture_rng_state() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) describing python, numpy, torch and CUDA generator states, pickle-free."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_key, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    tensors = {"torch": torch.get_rng_state(), "numpy_key": torch.from_numpy(np.asarray(np_key, dtype=np.int64))}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = state
    meta = {
        "python": json.dumps({"version": py_version, "state": list(py_state), "gauss_next": py_gauss}),
        "numpy": json.dumps({"name": np_name, "pos": int(np_pos), "has_gauss": int(np_has_gauss), "cached_gaussian": float(np_gauss)}),
    }
    return tensors, meta


def restore_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    """Inverse of capture_rng_state."""
    py = json.loads(meta["python"])
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    npm = json.loads(meta["numpy"])
    np.random.set_state((npm["name"], tensors["numpy_key"].numpy().astype(np.uint32), npm["pos"], npm["has_gauss"], npm["cached_gaussian"]))
    torch.set_rng_state(tensors["torch"])
    cuda = sorted((int(k.split(".")[1]), v) for k, v in tensors.items() if k.startswith("cuda."))
    if cuda and torch.cuda.is_available():
        states = [v for _, v in cuda]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
        else:
            logger.warning("checkpoint has %d CUDA RNG states, this machine %d devices: CUDA RNG not restored",
                           len(states), torch.cuda.device_count())


def write_rng_state(folder: Path, rank: int) -> None:
    tensors, meta = capture_rng_state()
    with atomic_path(folder / f"rng_rank{rank}.safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=meta)


def read_rng_state(folder: Path, rank: int) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    path = folder / f"rng_rank{rank}.safetensors"
    if not path.is_file():
        path = folder / "rng_rank0.safetensors"
        logger.warning("%s has no RNG state for rank %d; using rank 0's", folder, rank)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    return load_file(str(path)), meta


# ------------------------------------------------------------------------------------------ save

def write_optimizer_shard(folder: Path, rank: int, optimizer_state: dict) -> None:
    """One rank's optimizer state (sharded training: FSDP / DeepSpeed)."""
    torch.save(optimizer_state, folder / f"optimizer_rank{rank}.pt")


def write_checkpoint_files(
    folder: Path,
    trainable: dict[str, torch.Tensor],
    optimizer_state: dict | None,
    scheduler_state: dict,
    state: dict[str, Any],
    ema_shadow: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write the main process's files into `folder` (the temp folder); state.json goes last.
    `optimizer_state` None: the ranks wrote their shards (write_optimizer_shard)."""
    save_file(trainable, str(folder / "trainable.safetensors"))
    if ema_shadow is not None:
        save_file(ema_shadow, str(folder / "ema.safetensors"))
    if optimizer_state is not None:
        torch.save(optimizer_state, folder / "optimizer.pt")
    torch.save(scheduler_state, folder / "lr_scheduler.pt")
    write_json(folder / "state.json", {"format": CHECKPOINT_FORMAT, **state})


def move_into_place(temp: Path, final: Path) -> Path:
    """Rename a fully written temp folder to `final` (replacing an older folder of that name).

    (Not ingredients.files.atomic.atomic_dir: every process writes its RNG state into the checkpoint's
    temp folder, so its name must be known to all ranks, not drawn by mkdtemp on one.)"""
    if final.exists():
        trash = final.with_name(f".{final.name}.old")
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(final, trash)
        os.replace(temp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(temp, final)
    return final


def prune_checkpoints(root: Path, keep: int) -> None:
    """Delete all but the newest `keep` complete checkpoints."""
    for _, path in list_checkpoints(root)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------------------------------------------ load

@dataclass
class Checkpoint:
    """A loaded checkpoint (tensors on CPU)."""

    path: Path
    state: dict[str, Any]
    trainable: dict[str, torch.Tensor]
    optimizer: dict
    lr_scheduler: dict
    ema: dict[str, torch.Tensor] | None

    @property
    def step(self) -> int:
        return int(self.state["step"])


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint folder; optimizer/scheduler states load with `read_weights` (no pickled code)."""
    path = Path(path)
    state_path = path / "state.json"
    if not state_path.is_file():
        raise FileNotFoundError(f"{state_path} is missing: {path} is not a complete checkpoint")
    state = json.loads(state_path.read_text())
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{state_path}: checkpoint format {state.get('format')!r}, this code reads {CHECKPOINT_FORMAT}")
    for name in ("trainable.safetensors", "optimizer.pt", "lr_scheduler.pt"):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path / name} is missing: the checkpoint is incomplete")
    ema_path = path / "ema.safetensors"
    return Checkpoint(
        path=path,
        state=state,
        trainable=load_file(str(path / "trainable.safetensors")),
        optimizer=read_weights(path / "optimizer.pt"),
        lr_scheduler=read_weights(path / "lr_scheduler.pt"),
        ema=load_file(str(ema_path)) if ema_path.is_file() else None,
    )


def params_differences(saved: dict[str, Any], current: dict[str, Any], may_differ: set[str], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two resolved specs, except those in `may_differ`."""
    out = []
    for key in sorted(set(saved) | set(current)):
        name = f"{prefix}{key}"
        if name in may_differ:
            continue
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(params_differences(a, b, may_differ, name + "."))
        elif a != b:
            out.append(f"{name}: checkpoint {a!r}, now {b!r}")
    return out
