"""Runtime speed switches of the transformer: identity SDPA, fused identity injection, torch.compile.

Each is a plain function on a built model, so the benchmark, the pipeline and tests flip them the
same way. The first two change only how the same function is computed (tests check equality).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from ingredients.models import IngredientsTransformer3DModel

logger = logging.getLogger(__name__)

COMPILE_MODES = ("off", "regional", "full")


def _require_ours(model: nn.Module, what: str) -> IngredientsTransformer3DModel:
    if not isinstance(model, IngredientsTransformer3DModel):
        raise TypeError(f"{what} applies to IngredientsTransformer3DModel, got {type(model).__name__}")
    return model


def set_identity_sdpa(model: IngredientsTransformer3DModel, enabled: bool) -> int:
    """Use `scaled_dot_product_attention` (or the explicit softmax) in the projector and the injectors.

    Returns how many attention modules were switched. Also records `identity_sdpa` in the config, so a
    saved model keeps the setting.
    """
    _require_ours(model, "identity_sdpa")
    switched = 0
    for module in model.modules():
        if hasattr(module, "use_sdpa"):
            module.use_sdpa = bool(enabled)
            switched += 1
    model.register_to_config(identity_sdpa=bool(enabled))
    return switched


def set_fused_identity_injection(model: IngredientsTransformer3DModel, enabled: bool) -> None:
    """Mix identities before `to_out` (and fold projections into the ID tokens where cheaper), or apply
    `to_out` per identity and sum afterwards, as the reference does. Read by the forward at every call."""
    _require_ours(model, "fused_identity_injection")
    model.register_to_config(fused_identity_injection=bool(enabled))


def compile_transformer(model: nn.Module, mode: str = "regional", **compile_kwargs) -> int:
    """`torch.compile` the transformer in place; returns the number of compiled modules.

    `regional` compiles each transformer block (one graph reused by all blocks: short compile time, and
    the model's own Python forward, identity injection and any step cache stay eager); `full` compiles
    the whole module. `compile_kwargs` go to `torch.compile` (e.g. mode="max-autotune", dynamic=False).
    """
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile mode must be one of {COMPILE_MODES}, got {mode!r}")
    if mode == "off":
        return 0
    if mode == "full":
        model.compile(**compile_kwargs)
        return 1
    blocks = getattr(model, "transformer_blocks", None)
    if not isinstance(blocks, nn.ModuleList) or len(blocks) == 0:
        raise ValueError(f"{type(model).__name__} has no transformer_blocks to compile; use mode='full'")
    for block in blocks:
        block.compile(**compile_kwargs)
    logger.info("compiled %d %s blocks (torch %s)", len(blocks), type(blocks[0]).__name__, torch.__version__)
    return len(blocks)
