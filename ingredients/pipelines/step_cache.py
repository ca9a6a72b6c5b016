"""Step cache: reuse the transformer's block-stack residual between adjacent denoising steps.

Why not diffusers' hooks: `diffusers.hooks.apply_first_block_cache` (also `enable_cache(FirstBlockCacheConfig)`)
wraps each `CogVideoXBlock`, and on a cached step turns the first block's output into the last block's
and makes the other blocks identity functions. Our forward injects identity features *between* blocks,
outside the hooked modules, so on a cached step every injection still runs and is added a second time
on top of a residual that already contains it (and the injection cost is not saved). Tests show the
hooked model's output moving away from the uncached one on a step that should reproduce it exactly,
while the bare CogVideoX is reproduced. This module is the port that caches the right thing.

Two signals decide when a step is cached, per guidance branch (per batch row):
- `first_block` (First-Block Cache, ParaAttention/diffusers): block 0 always runs; its residual
  (output - input) is compared with the one of the last fully computed step, relative L1
  `mean|r - r_prev| / mean|r_prev|`. Below `threshold`, the rest of the stack (injection points
  included) is replaced by the cached residual `h_stack_out - h_block0_out`.
- `modulated_input` (TeaCache): block 0's modulated input `norm1(h, temb)` is compared with the previous
  step's; the relative L1 changes accumulate over skipped steps, and while the sum stays below
  `threshold` the whole stack (all blocks and injections) is replaced by `h_stack_out - h_stack_in`.
  (TeaCache rescales the distance with a polynomial fitted per model; no fit exists for this model, so
  the raw distance is used.)

Rows whose distance is above the threshold are recomputed as a sub-batch, the others reuse their cache,
so the unconditional and conditional branches skip independently. Under reference batch semantics
(all rows routed with sample 0) the decision is joint. The cache never applies with gradients enabled,
an index mask (training) or when routing logits are requested: those calls run the model's own forward.
It resets itself when the timestep goes up (a new sampling run) or the batch size changes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from ingredients.models import IdentityBatch, IngredientsTransformer3DModel
from ingredients.models.transformer_ingredients import IngredientsTransformerOutput

try:  # diffusers >= 0.36
    from diffusers.utils import apply_lora_scale
except ImportError:  # pragma: no cover - older diffusers scale LoRA inside the processors
    def apply_lora_scale(_name):
        return lambda fn: fn

logger = logging.getLogger(__name__)

SIGNALS = ("first_block", "modulated_input")


@dataclass(frozen=True)
class StepCacheConfig:
    """threshold: relative L1 change below which a branch reuses its cached residual (0 = never);
    signal: 'first_block' (FBCache) or 'modulated_input' (TeaCache); per_branch: decide per batch row
    (False: one decision for the whole batch, from the batch's pooled distance, like diffusers)."""

    threshold: float = 0.05
    signal: str = "first_block"
    per_branch: bool = True

    def __post_init__(self):
        if self.signal not in SIGNALS:
            raise ValueError(f"step cache signal must be one of {SIGNALS}, got {self.signal!r}")
        if not self.threshold >= 0:
            raise ValueError(f"step cache threshold must be >= 0, got {self.threshold}")


@dataclass
class StepCacheStats:
    """Per call: which rows were computed (True) or served from the cache (False), and their distances."""

    computed: list[list[bool]] = field(default_factory=list)
    distances: list[list[float | None]] = field(default_factory=list)
    bypassed_calls: int = 0

    def summary(self) -> dict[str, Any]:
        rows = sum(len(c) for c in self.computed)
        skipped = sum(not x for c in self.computed for x in c)
        return {
            "calls": len(self.computed),
            "row_steps": rows,
            "row_steps_skipped": skipped,
            "skip_fraction": skipped / rows if rows else 0.0,
            "calls_fully_skipped": sum(not any(c) for c in self.computed),
            "bypassed_calls": self.bypassed_calls,
            "computed": [list(c) for c in self.computed],
        }


class StepCache:
    """State and forward of the step cache for one `IngredientsTransformer3DModel` (see the module doc)."""

    def __init__(self, model: IngredientsTransformer3DModel, config: StepCacheConfig):
        self.model = model
        self.config = config
        self.stats = StepCacheStats()
        self.reset()

    def reset(self) -> None:
        """Forget cached residuals and signals (the next call computes every row)."""
        self._signal: torch.Tensor | None = None  # [B, N, C]: reference signal per row
        self._residual: torch.Tensor | None = None  # [B, N, C]
        self._accumulated: torch.Tensor | None = None  # [B] float32, TeaCache
        self._last_timestep: float | None = None

    # ------------------------------------------------------------------ decision
    def _distances(self, signal: torch.Tensor) -> torch.Tensor:
        """Relative L1 change per row [B] (float32) against the stored signal."""
        diff = (signal.float() - self._signal.float()).abs().flatten(1)  # [B, N*C]
        ref = self._signal.float().abs().flatten(1)
        if self.config.per_branch:
            return diff.mean(1) / ref.mean(1).clamp_min(1e-12)
        pooled = diff.mean() / ref.mean().clamp_min(1e-12)
        return pooled.expand(signal.shape[0])

    def _decide(self, signal: torch.Tensor, joint: bool) -> tuple[torch.Tensor, list[float | None]]:
        """Rows to compute [B] bool and the distances used (None where there was no cache)."""
        batch = signal.shape[0]
        if self._signal is None or self._residual is None:
            return torch.ones(batch, dtype=torch.bool), [None] * batch
        dist = self._distances(signal).cpu()
        if self.config.signal == "modulated_input":
            self._accumulated = self._accumulated + dist
            dist = self._accumulated
        compute = ~(dist < self.config.threshold)
        if joint and bool(compute.any()):
            compute[:] = True
        return compute, [float(d) for d in dist]

    def _check_new_run(self, timestep: Any, batch: int) -> None:
        t = float(torch.as_tensor(timestep).float().max())
        stale = self._residual is not None and self._residual.shape[0] != batch
        if stale or (self._last_timestep is not None and t > self._last_timestep):
            self.reset()
        self._last_timestep = t

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        timestep: int | float | torch.LongTensor,
        timestep_cond: torch.Tensor | None = None,
        ofs: int | float | torch.LongTensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
        attention_kwargs: dict[str, Any] | None = None,
        id_cond: torch.Tensor | list[torch.Tensor] | None = None,
        id_vit_hidden: list | None = None,
        id_mask: torch.Tensor | None = None,
        identities: IdentityBatch | None = None,
        index_mask: torch.Tensor | None = None,
        reference_batch_semantics: bool | None = None,
        use_router: bool | None = None,
        return_routing_logits: bool = False,
        return_dict: bool = True,
    ):
        """The model's forward with the block stack served from the cache where the signal allows."""
        kwargs = dict(
            hidden_states=hidden_states, encoder_hidden_states=encoder_hidden_states, timestep=timestep,
            timestep_cond=timestep_cond, ofs=ofs, image_rotary_emb=image_rotary_emb, attention_kwargs=attention_kwargs,
            id_cond=id_cond, id_vit_hidden=id_vit_hidden, id_mask=id_mask, identities=identities,
            reference_batch_semantics=reference_batch_semantics, use_router=use_router,
        )
        if index_mask is not None or return_routing_logits or torch.is_grad_enabled():
            # training or routing maps need every block's real output: the model's own forward
            self.stats.bypassed_calls += 1
            return type(self.model).forward(
                self.model, index_mask=index_mask, return_routing_logits=return_routing_logits, return_dict=return_dict, **kwargs
            )
        sample = _cached_forward(self.model, self, **kwargs)
        return IngredientsTransformerOutput(sample=sample) if return_dict else (sample,)


@apply_lora_scale("attention_kwargs")
def _cached_forward(
    model: IngredientsTransformer3DModel,
    cache: StepCache,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    timestep,
    timestep_cond=None,
    ofs=None,
    image_rotary_emb=None,
    attention_kwargs=None,
    id_cond=None,
    id_vit_hidden=None,
    id_mask=None,
    identities=None,
    reference_batch_semantics=None,
    use_router=None,
) -> torch.Tensor:
    """`IngredientsTransformer3DModel.forward` (inference path) with the cached block stack; returns the sample."""
    cfg = model.config
    batch_size, num_frames, _, height, width = hidden_states.shape
    ref_batch = cfg.reference_batch_semantics if reference_batch_semantics is None else reference_batch_semantics
    routed = cfg.use_router if use_router is None else use_router
    identities = model.batch_identities(identities, id_cond, id_vit_hidden, id_mask, hidden_states)
    cache._check_new_run(timestep, batch_size)

    # 1-2. Time and patch embedding (the model's own steps)
    hidden_states, encoder_hidden_states, emb = model.embed_inputs(hidden_states, encoder_hidden_states, timestep, timestep_cond, ofs)
    if emb.shape[0] != batch_size:  # a scalar timestep: [1, D] -> [B, D], so rows can be selected
        emb = emb.expand(batch_size, -1)

    # 3. Signal, decision, block stack (computed rows) or cached residual (skipped rows)
    blocks = model.transformer_blocks
    first_block = cache.config.signal == "first_block"
    if first_block:
        start_h, start_enc = blocks[0](
            hidden_states=hidden_states, encoder_hidden_states=encoder_hidden_states, temb=emb,
            image_rotary_emb=image_rotary_emb, attention_kwargs=attention_kwargs,
        )
        signal, start_block = start_h - hidden_states, 1  # block 0 done; its injection is in the cached part
    else:
        signal = blocks[0].norm1(hidden_states, encoder_hidden_states, temb=emb)[0]
        start_h, start_enc, start_block = hidden_states, encoder_hidden_states, 0
    compute, distances = cache._decide(signal, joint=ref_batch)
    rows = compute.nonzero().flatten().tolist()
    out = torch.empty_like(start_h)
    if rows:
        sub = slice(None) if len(rows) == batch_size else torch.tensor(rows, device=start_h.device)
        out[sub] = model.run_blocks(
            start_h[sub], start_enc[sub], emb[sub], image_rotary_emb, attention_kwargs,
            None if identities is None else IdentityBatch(identities.tokens[sub], identities.mask[sub]),
            ref_batch, routed, start=start_block, inject_before_start=first_block,
        )[0]
    skipped = [b for b in range(batch_size) if not compute[b]]
    if skipped:
        idx = torch.tensor(skipped, device=start_h.device)
        out[idx] = start_h[idx] + cache._residual[idx].to(start_h.dtype)
    # remember: residuals and signals of computed rows (FBCache compares with the last computed step;
    # TeaCache with the previous step, accumulating while it skips)
    if cache._residual is None:
        cache._residual = torch.zeros_like(out)
        cache._signal = signal.clone()
        cache._accumulated = torch.zeros(batch_size)
    if rows:
        sub = torch.tensor(rows, device=out.device)
        cache._residual[sub] = out[sub] - start_h[sub]
        cache._signal[sub] = signal[sub]
        cache._accumulated[compute] = 0.0
    if not first_block:
        cache._signal = signal.clone()
    cache.stats.computed.append(compute.tolist())
    cache.stats.distances.append(distances)

    # 4-5. Final block and unpatchify (the model's own step)
    return model.unpatchify_output(out, emb, (batch_size, num_frames, height, width))


def enable_step_cache(model: IngredientsTransformer3DModel, config: StepCacheConfig | None = None) -> StepCache:
    """Serve `model`'s forward through a step cache; returns the cache (its `stats`, `reset()`).

    Enable it before CPU offload or other forward wrappers (they wrap whatever forward they find).
    """
    if not isinstance(model, IngredientsTransformer3DModel):
        raise TypeError(f"the step cache wraps IngredientsTransformer3DModel, got {type(model).__name__}")
    if "forward" in vars(model):
        raise ValueError(
            "model.forward is already wrapped (a step cache, an offload hook or a diffusers hook): "
            "call disable_step_cache / remove the hook first, and enable the step cache before offloading"
        )
    if getattr(model, "is_cache_enabled", False):
        raise ValueError("a diffusers cache is enabled on this model (enable_cache): call model.disable_cache() first")
    cache = StepCache(model, config or StepCacheConfig())
    model.forward = cache.forward
    return cache


def disable_step_cache(model: IngredientsTransformer3DModel) -> None:
    """Restore the model's own forward."""
    bound = vars(model).get("forward")
    if bound is None or not isinstance(getattr(bound, "__self__", None), StepCache):
        raise ValueError("no step cache is enabled on this model")
    del model.forward
