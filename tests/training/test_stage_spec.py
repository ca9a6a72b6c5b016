"""The stage specification is data: built from params, validated with errors naming the key, and
applied to a model it decides exactly which parameters train."""

from __future__ import annotations

import re

import pytest
import torch
import yaml

import ingredients.training.train as train_cli
from ingredients.models import IngredientsTransformer3DModel
from ingredients.model_folder.tiny import tiny_transformer_config
from ingredients.training.stage_spec import build_stage_spec
from ingredients.training.trainable import (
    add_backbone_lora,
    configure_trainable,
    merge_backbone_lora,
    parameter_group,
)
from tests.training.conftest import SMALL_MODEL, train_params

PREFIX = {"projector": "local_facial_extractor.", "injectors": "perceiver_cross_attention.", "routers": "router."}


def documented_params() -> dict:
    """The params layout documented in ingredients/training/train.py."""
    block = re.search(r"```yaml\n(.*?)```", train_cli.__doc__, re.S)
    assert block, "train.py's docstring lost its params example"
    return yaml.safe_load(block.group(1))


def small_transformer() -> IngredientsTransformer3DModel:
    torch.manual_seed(0)
    return IngredientsTransformer3DModel(**tiny_transformer_config(**{k: v for k, v in SMALL_MODEL.items()}))


def test_documented_layout_builds_both_stages():
    params = documented_params()["train"]
    s1, s2 = build_stage_spec(params, "stage1"), build_stage_spec(params, "stage2")
    assert (s1.stage, s1.steps, s1.batch_size, s1.lr) == ("stage1", 60, 2, 1e-3)
    assert (s1.identities.min, s1.identities.max, s1.routing.weight) == (1, 1, 0.0)
    assert s1.train.routers is False and s1.train.backbone == "frozen"
    assert (s2.identities.min, s2.identities.max, s2.routing.weight, s2.routing.kind) == (2, 3, 1.0, "ce")
    assert s2.init_from == "stage1" and s2.train.routers is True
    # common values reach both stages
    assert s1.seed == s2.seed == 0 and s1.mixed_precision == s2.mixed_precision == "no"


def test_stage_overrides_common_deeply():
    params = train_params(common={"ema": {"enabled": True, "decay": 0.99}}, stage2={"ema": {"decay": 0.9}})
    s1, s2 = build_stage_spec(params, "stage1"), build_stage_spec(params, "stage2")
    assert (s1.ema.enabled, s1.ema.decay) == (True, 0.99)
    assert (s2.ema.enabled, s2.ema.decay) == (True, 0.9)  # enabled kept from common, decay overridden


@pytest.mark.parametrize(
    ("section", "values", "expected"),
    [
        ("stage1", {"train": {"backbone": "lorra"}}, r"train\.stage1\.train\.backbone: Input should be 'frozen', 'scaled_lr' or 'lora' \(got 'lorra'\)"),
        ("stage1", {"train": {"projektor": True}}, r"train\.stage1\.train\.projektor: unknown key; allowed keys here: backbone, backbone_lr_scale, injectors, lora_alpha, lora_rank, patch_embed, projector, routers"),
        ("stage1", {"routing": {"kind": "l1"}}, r"train\.stage1\.routing\.kind: Input should be 'ce' or 'mse'"),
        ("common", {"mixed_precision": "fp8"}, r"train\.stage1\.mixed_precision: Input should be 'no', 'bf16', 'fp16' or 'auto'"),
        ("stage1", {"lr_schedule": {"name": "cosine_annealing"}}, r"train\.stage1\.lr_schedule\.name: Input should be"),
        ("stage1", {"batch_size": 0}, r"train\.stage1\.batch_size: Input should be greater than or equal to 1"),
        ("stage1", {"identities": {"min": 3, "max": 2}}, r"identities\.max=2 is below identities\.min=3"),
        ("stage1", {"init_from": "stage7"}, r"train\.stage1\.init_from: 'stage7' is neither 'model' nor a stage; allowed: model, stage1, stage2"),
        ("stage1", {"routing": {"weight": 1.0}}, r"routing\.weight > 0 needs multi-identity clips"),
        ("stage1", {"train": {"projector": False, "injectors": False}}, r"nothing trains"),
        ("stage1", {"data": {"temporal_sampling": "random"}}, r"train\.stage1\.data\.temporal_sampling: Input should be 'uniform' or 'start'"),
    ],
)
def test_bad_params_name_the_key_and_allowed_values(section, values, expected):
    with pytest.raises(ValueError, match=expected):
        build_stage_spec(train_params(**{section: values}), "stage1")


def test_missing_required_key_and_unknown_stage():
    params = train_params()
    del params["stage1"]["steps"]
    with pytest.raises(ValueError, match=r"train\.stage1\.steps: required key is missing"):
        build_stage_spec(params, "stage1")
    with pytest.raises(ValueError, match=r"train\.stage3: no such stage section; stages in params: stage1, stage2"):
        build_stage_spec(train_params(), "stage3")
    with pytest.raises(ValueError, match=r"train\.common: no such stage section"):
        build_stage_spec(train_params(), "common")


def _grad_names(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def _names(model, *groups) -> set[str]:
    return {n for n, _ in model.named_parameters() if parameter_group(n) in groups}


def test_stage1_trains_exactly_projector_and_injectors():
    model = small_transformer()
    spec = build_stage_spec(train_params(), "stage1")
    groups = configure_trainable(model, spec.train, spec.lr)
    expected = {n for n, _ in model.named_parameters() if n.startswith((PREFIX["projector"], PREFIX["injectors"]))}
    assert _grad_names(model) == expected
    assert [g["name"] for g in groups] == ["projector", "injectors"]
    assert all(g["lr"] == spec.lr for g in groups)
    # the groups partition the model: nothing unnamed, backbone is everything else
    assert _names(model, "projector", "injectors", "routers", "backbone") == {n for n, _ in model.named_parameters()}
    assert not any(n.startswith(tuple(PREFIX.values())) for n in _names(model, "backbone"))


def test_stage2_adds_routers():
    model = small_transformer()
    spec = build_stage_spec(train_params(), "stage2")
    configure_trainable(model, spec.train, spec.lr)
    assert _grad_names(model) == _names(model, "projector", "injectors", "routers")
    assert len([n for n in _grad_names(model) if n.startswith("router.")]) == 2 * 7  # 2 points x (2 LayerNorms x 2 + id_merge + to_q + to_kv)


def test_scaled_lr_backbone_gets_its_own_learning_rate():
    model = small_transformer()
    spec = build_stage_spec(train_params(stage1={"train": {"backbone": "scaled_lr", "backbone_lr_scale": 0.05}}), "stage1")
    groups = {g["name"]: g for g in configure_trainable(model, spec.train, spec.lr)}
    assert _grad_names(model) == {n for n, _ in model.named_parameters() if not n.startswith("router.")}
    assert groups["backbone"]["lr"] == pytest.approx(spec.lr * 0.05)
    assert groups["projector"]["lr"] == spec.lr
    assert sum(p.numel() for p in groups["backbone"]["params"]) == sum(
        p.numel() for n, p in model.named_parameters() if parameter_group(n) == "backbone")


def test_patch_embed_switch_trains_the_patch_embedding_at_the_stage_lr():
    patch = {"patch_embed.proj.weight", "patch_embed.proj.bias", "patch_embed.text_proj.weight", "patch_embed.text_proj.bias"}
    model = small_transformer()
    spec = build_stage_spec(train_params(stage1={"train": {"patch_embed": True}}), "stage1")
    groups = {g["name"]: g for g in configure_trainable(model, spec.train, spec.lr)}
    assert list(groups) == ["projector", "injectors", "patch_embed"] and groups["patch_embed"]["lr"] == spec.lr
    assert _grad_names(model) == _names(model, "projector", "injectors") | patch
    # a scaled-lr backbone keeps its scale; the patch embedding trains at the stage's lr
    model = small_transformer()
    spec = build_stage_spec(train_params(stage1={"train": {"patch_embed": True, "backbone": "scaled_lr"}}), "stage1")
    groups = {g["name"]: g for g in configure_trainable(model, spec.train, spec.lr)}
    assert groups["patch_embed"]["lr"] == spec.lr and groups["backbone"]["lr"] == pytest.approx(spec.lr * 0.1)
    name_of = {id(p): n for n, p in model.named_parameters()}
    assert {name_of[id(p)] for p in groups["patch_embed"]["params"]} == patch
    assert not patch & {name_of[id(p)] for p in groups["backbone"]["params"]}
    # off (the default): patch_embed is backbone, frozen with it
    assert "patch_embed" not in {g["name"] for g in configure_trainable(small_transformer(), build_stage_spec(train_params(), "stage1").train, 1e-3)}
    assert parameter_group("patch_embed.proj.weight") == "backbone"
    build_stage_spec(train_params(stage1={"train": {"projector": False, "injectors": False, "patch_embed": True}}), "stage1")


def test_lora_trains_only_adapters_on_backbone_attention():
    model = small_transformer()
    spec = build_stage_spec(train_params(stage1={"train": {"backbone": "lora", "lora_rank": 4}}), "stage1")
    add_backbone_lora(model, spec.train.lora_rank, spec.train.lora_alpha)
    configure_trainable(model, spec.train, spec.lr)
    lora = {n for n in _grad_names(model) if parameter_group(n) == "lora"}
    expected = {
        f"transformer_blocks.{i}.attn1.{m}.lora_{ab}.default.weight"
        for i in range(2) for m in ("to_q", "to_k", "to_v", "to_out.0") for ab in ("A", "B")
    }
    assert lora == expected
    assert _grad_names(model) - lora == _names(model, "projector", "injectors")
    # identity modules' own to_q/to_kv/to_out got no adapters
    assert not any(".lora_" in n for n, _ in model.named_parameters() if n.startswith(tuple(PREFIX.values())))
    a = dict(model.named_parameters())["transformer_blocks.0.attn1.to_q.lora_A.default.weight"]
    assert tuple(a.shape) == (4, 96)


def test_lora_merge_keeps_outputs_and_removes_adapters():
    model = small_transformer().eval()
    add_backbone_lora(model, 4)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.2)  # LoRA B starts at zero; make the adapter do something
    g = torch.Generator().manual_seed(1)
    inputs = dict(
        hidden_states=torch.randn(1, 2, 8, 8, 8, generator=g), encoder_hidden_states=torch.randn(1, 32, 384, generator=g),
        timestep=torch.tensor([500]), id_cond=torch.randn(1, 2, 160, generator=g),
        id_vit_hidden=[torch.randn(1, 2, 65, 64, generator=g) for _ in range(5)],
    )
    with torch.no_grad():
        with_adapter = model(**inputs).sample
        model.disable_adapters()
        without = model(**inputs).sample
        model.enable_adapters()
        merge_backbone_lora(model)
        merged = model(**inputs).sample
    assert (with_adapter - without).abs().max() > 1e-3
    torch.testing.assert_close(merged, with_adapter, rtol=1e-5, atol=1e-5)
    assert not any(".lora_" in n for n, _ in model.named_parameters())
    assert set(model.state_dict()) == set(small_transformer().state_dict())


def test_configure_refuses_mismatched_lora_state():
    model = small_transformer()
    spec = build_stage_spec(train_params(stage1={"train": {"backbone": "lora"}}), "stage1")
    with pytest.raises(ValueError, match="call add_backbone_lora first"):
        configure_trainable(model, spec.train, spec.lr)
