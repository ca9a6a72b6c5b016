"""Validation numbers: what cannot be computed is missing (never 0), and every number says whether it
was measured on held-out or on training clips."""

from __future__ import annotations

import csv
import json
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pytest
import torch
from diffusers import CogVideoXDPMScheduler

from ingredients.mlflow_run import TrackingParams
from ingredients.model_folder.tiny import SCHEDULER_CONFIG
from ingredients.training import RunPaths, Trainer, build_stage_spec
from ingredients.training.clip_encoding import EncodedClip
from ingredients.training.stage_spec import LossSpec, Routing
from ingredients.training.validation import ValidationClip, validation_metrics
from tests.training.conftest import train_params

NUM_TOKENS = 32  # 2 latent frames x 4 x 4 patches of the fake clips below


class _ZeroModel(torch.nn.Module):
    """Predicts zeros; routes every token with the given logits [N, K] (or has no router)."""

    def __init__(self, logits: torch.Tensor | None) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, hidden_states, **kwargs):
        routing = None if self.logits is None else [self.logits[None].expand(hidden_states.shape[0], -1, -1)]
        return SimpleNamespace(sample=torch.zeros_like(hidden_states[:, :, : hidden_states.shape[2] // 2]),
                               routing_logits=routing)


def _clip(k: int, labels: torch.Tensor) -> ValidationClip:
    g = torch.Generator().manual_seed(k)
    encoded = EncodedClip(
        video_dist=torch.randn(8, 2, 8, 8, generator=g), canvas_dist=torch.randn(8, 1, 8, 8, generator=g),
        prompt_embeds=torch.randn(32, 384, generator=g), id_cond=torch.randn(k, 160, generator=g),
        id_vit_hidden=[torch.randn(k, 65, 64, generator=g) for _ in range(5)],
    )
    return ValidationClip(f"clip_k{k}", torch.zeros(5, 3, 64, 64), labels, "a prompt", [], encoded)


def _metrics(clip: ValidationClip, model, routing_weight: float):
    return validation_metrics(model, [clip], CogVideoXDPMScheduler(**SCHEDULER_CONFIG), None, 2, 0.7,
                              torch.zeros(32, 384), [300, 700], seed=0, loss=LossSpec(diffusion_weight=1.0),
                              routing=Routing(weight=routing_weight))


def test_val_loss_is_missing_when_its_routing_term_cannot_be_computed():
    single = _clip(1, torch.zeros(NUM_TOKENS, dtype=torch.long))
    res = _metrics(single, _ZeroModel(torch.zeros(NUM_TOKENS, 1)), routing_weight=1.0)
    assert "val_loss" not in res.metrics and "val_routing_loss" not in res.metrics
    assert "routing.weight is 1.0 but the routing loss is missing" in res.missing["val_loss"]
    # at routing weight 0 the total has no routing term: it is the diffusion loss
    res = _metrics(single, _ZeroModel(torch.zeros(NUM_TOKENS, 1)), routing_weight=0.0)
    assert res.metrics["val_loss"] == res.metrics["val_diffusion_loss"]
    # a multi-identity clip without a labelled token: no routing loss (not 0), no routing accuracy
    unlabelled = _clip(2, torch.full((NUM_TOKENS,), -1))
    res = _metrics(unlabelled, _ZeroModel(torch.zeros(NUM_TOKENS, 2)), routing_weight=1.0)
    assert not {"val_loss", "val_routing_loss", "routing_acc"} & set(res.metrics), res.metrics
    # labelled: total = diffusion + weight * routing; uniform logits give CE = log 2
    labels = torch.arange(NUM_TOKENS) % 2
    res = _metrics(_clip(2, labels), _ZeroModel(torch.zeros(NUM_TOKENS, 2)), routing_weight=0.5)
    assert res.metrics["val_routing_loss"] == pytest.approx(float(torch.log(torch.tensor(2.0))))
    assert res.metrics["val_loss"] == pytest.approx(res.metrics["val_diffusion_loss"] + 0.5 * res.metrics["val_routing_loss"])


def test_routing_accuracy_comes_with_majority_and_chance_baselines():
    """3/4 of the labelled tokens are identity 0: always answering 0 scores 0.75 (majority), a uniform
    guess 0.5 (chance); a router that always answers 1 scores 0.25, below both."""
    labels = torch.where(torch.arange(NUM_TOKENS) % 4 == 3, 1, 0)
    labels[:4] = -1  # background tokens count for none of them
    always_one = torch.stack([torch.zeros(NUM_TOKENS), torch.ones(NUM_TOKENS)], dim=-1)  # [N, K = 2]
    res = _metrics(_clip(2, labels), _ZeroModel(always_one), routing_weight=0.0)
    assert res.metrics["routing_acc"] == pytest.approx(7 / 28)
    assert res.metrics["routing_acc_majority"] == pytest.approx(21 / 28)
    assert res.metrics["routing_acc_chance"] == pytest.approx(0.5)
    # not measurable without labelled tokens: missing with routing_acc, never 0
    res = _metrics(_clip(2, torch.full((NUM_TOKENS,), -1)), _ZeroModel(always_one), routing_weight=0.0)
    assert not {"routing_acc", "routing_acc_majority", "routing_acc_chance"} & set(res.metrics)


# ------------------------------------------------------------------------------------------ labels

@pytest.fixture(scope="module")
def manifests(tiny_manifest, tmp_path_factory) -> dict[str, Path]:
    """The tiny data split by video: training = vid_000..002, held out = vid_003 (one clip with one
    identity, one with two); `overlap` mixes a training video in; `two_only` has only K = 2 clips."""
    root = tmp_path_factory.mktemp("split") / "data"
    shutil.copytree(tiny_manifest.parent.parent, root)
    rows = [json.loads(line) for line in (root / "curated" / "manifest.jsonl").read_text().splitlines() if line.strip()]
    video = {r["clip_id"]: Path(r["video"]).stem for r in rows}
    picks = {
        "train": lambda r: video[r["clip_id"]] != "vid_003",
        "heldout": lambda r: video[r["clip_id"]] == "vid_003",
        "overlap": lambda r: video[r["clip_id"]] in ("vid_000", "vid_003"),
        "two_only": lambda r: video[r["clip_id"]] == "vid_001",
    }
    out = {}
    for name, keep in picks.items():
        out[name] = root / "curated" / f"{name}.jsonl"
        out[name].write_text("".join(json.dumps(r) + "\n" for r in rows if keep(r)))
    assert [video[r["clip_id"]] for r in rows if picks["heldout"](r)] == ["vid_003", "vid_003"]
    return out


def _spec(**stage1):
    return build_stage_spec(train_params(stage1={
        "steps": 1, "batch_size": 1, "identities": {"min": 1, "max": 2}, "precompute": {"enabled": False},
        "validation": {"timesteps": [500], "num_clips": 2, "inference_steps": 0}, **stage1}), "stage1")


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_heldout_validation_is_labelled_heldout_everywhere(manifests, small_model, tmp_path):
    out = tmp_path / "run"
    tracking = TrackingParams(uri=f"sqlite:///{tmp_path}/mlflow.db", experiment="test-validation")
    model_dir = Trainer(_spec(log_mlflow=True), RunPaths(manifests["train"], small_model, out,
                                                          val_manifest=manifests["heldout"]), tracking).fit()
    rows = _rows(out / "val_log.csv")
    assert [(r["step"], r["split"]) for r in rows] == [("0", "heldout"), ("1", "heldout")]
    assert all(r["routing_acc"] and r["val_loss"] for r in rows)  # the K = 2 held-out clip is routed
    assert all(0 < float(r["routing_acc_chance"]) <= float(r["routing_acc_majority"]) <= 1 for r in rows)
    info = json.loads((model_dir / "training_info.json").read_text())
    assert info["validation"] == {"manifest": str(manifests["heldout"].resolve()), "split": "heldout",
                                  "clips": ["vid_003_s00", "vid_003_s01"]}
    assert (out / "validation" / "step-00000001_heldout_routing.png").is_file()
    client = mlflow.MlflowClient(tracking_uri=tracking.uri)
    (run,) = client.search_runs([client.get_experiment_by_name("test-validation").experiment_id], "tags.stage = 'stage1'")
    assert {"heldout/val_loss", "heldout/routing_acc", "heldout/routing_acc/0", "heldout/routing_acc_majority",
            "heldout/routing_acc_chance"} <= set(run.data.metrics)
    assert not any(k.startswith(("val_", "routing_acc", "train_clips/")) for k in run.data.metrics)
    assert run.data.tags["validation_split"] == "heldout"
    assert run.data.params["paths.val_manifest"] == str(manifests["heldout"].resolve())


def test_validation_on_training_clips_warns_and_says_so(manifests, small_model, tmp_path, caplog):
    trainer = Trainer(_spec(), RunPaths(manifests["train"], small_model, tmp_path / "run"))
    for step in (trainer.prepare_accelerator, trainer.prepare_models, trainer.prepare_data, trainer.prepare_encoder):
        step()
    cases = {None: "no --val-manifest given", "train": "--val-manifest is the training manifest",
             "overlap": "validation clips come from training videos (vid_000.mp4)"}
    for val, reason in cases.items():
        trainer.paths.val_manifest = manifests[val].resolve() if val else None
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="ingredients.training.trainer"):
            trainer.prepare_validation()
        assert trainer.val_info["split"] == "train_clips" and trainer.val_clips, val
        assert f"validation runs on training clips ({reason}): its numbers are labelled 'train_clips', not held-out" in caplog.text
    # a held-out manifest without a clip of the stage's identity range: no numbers at all, said so
    trainer.paths.val_manifest = manifests["two_only"].resolve()
    trainer.spec = trainer.spec.model_copy(update={"identities": trainer.spec.identities.model_copy(update={"max": 1})})
    with caplog.at_level(logging.WARNING, logger="ingredients.training.trainer"):
        trainer.prepare_validation()
    assert trainer.val_clips == [] and trainer.val_info["clips"] == [] and trainer.validate() is None
    assert "has no clip with 1..1 identities (identity counts present: [2])" in caplog.text
    # the stage's DVC outputs exist all the same (the k3_training ablation failed without them)
    assert (tmp_path / "run" / "val_log.csv").read_text().splitlines() == [",".join(trainer.val_log.columns)]
    assert (tmp_path / "run" / "validation" / "README.txt").is_file()
