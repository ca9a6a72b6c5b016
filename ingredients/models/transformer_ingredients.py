"""The Ingredients transformer: CogVideoX image-to-video backbone + projector + ID injection + ID router.

Module names match the authors' checkpoint (backbone names of diffusers' CogVideoX,
`local_facial_extractor.*`, `perceiver_cross_attention.{n}.*`, `router.{n}.*`), so a released
checkpoint loads as it is (see `reference_format.py` for its config).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers.configuration_utils import register_to_config
from diffusers.models import CogVideoXTransformer3DModel
from diffusers.utils import BaseOutput
from torch import nn

from ingredients.models.identity_router import IDRouter, PerceiverCrossAttention, routed_injection, routing_loss
from ingredients.models.projector import MultiScaleProjector

try:  # diffusers >= 0.36
    from diffusers.utils import apply_lora_scale
except ImportError:  # pragma: no cover - older diffusers scale LoRA inside the processors
    def apply_lora_scale(_name):
        return lambda fn: fn


@dataclass
class IngredientsTransformerOutput(BaseOutput):
    """sample [B, F, C, H, W]; routing_loss scalar (with an index mask); routing_logits one [B, N, K] per injection point."""

    sample: torch.Tensor
    routing_loss: torch.Tensor | None = None
    routing_logits: list[torch.Tensor] | None = None


@dataclass
class IdentityBatch:
    """Padded identities of a batch: ID tokens [B, K, Q, D] and which slots are real, id_mask [B, K]."""

    tokens: torch.Tensor
    mask: torch.Tensor

    def to(self, device: torch.device | str) -> "IdentityBatch":
        return IdentityBatch(self.tokens.to(device), self.mask.to(device))


class IngredientsTransformer3DModel(CogVideoXTransformer3DModel):
    """CogVideoX transformer with multi-identity conditioning (Ingredients, arXiv 2501.01790).

    Face sizes default to the reference's hard-coded full-size values. Any number of identities per
    sample is supported; a batch may mix samples with different K (padded, with `id_mask`).
    `reference_batch_semantics=True` reproduces the reference's batch behaviour: routing and
    injection computed from sample 0 and added to every sample.
    """

    _no_split_modules = ["CogVideoXBlock", "CogVideoXPatchEmbed", "MultiScaleProjector"]

    @register_to_config
    def __init__(
        self,
        num_attention_heads: int = 48,
        attention_head_dim: int = 64,
        in_channels: int = 32,
        out_channels: int | None = 16,
        flip_sin_to_cos: bool = True,
        freq_shift: int = 0,
        time_embed_dim: int = 512,
        ofs_embed_dim: int | None = None,
        text_embed_dim: int = 4096,
        num_layers: int = 42,
        dropout: float = 0.0,
        attention_bias: bool = True,
        sample_width: int = 90,
        sample_height: int = 60,
        sample_frames: int = 49,
        patch_size: int = 2,
        patch_size_t: int | None = None,
        temporal_compression_ratio: int = 4,
        max_text_seq_length: int = 226,
        activation_fn: str = "gelu-approximate",
        timestep_activation_fn: str = "silu",
        norm_elementwise_affine: bool = True,
        norm_eps: float = 1e-5,
        spatial_interpolation_scale: float = 1.875,
        temporal_interpolation_scale: float = 1.0,
        use_rotary_positional_embeddings: bool = True,
        use_learned_positional_embeddings: bool = True,
        patch_bias: bool = True,
        # identity modules (reference values as defaults)
        cross_attn_interval: int = 2,
        local_face_scale: float = 1.0,
        id_embed_dim: int = 1280,
        vit_dim: int = 1024,
        num_vit_scales: int = 5,
        vit_scale_indices: list[int] | None = None,
        mapping_hidden_dim: int = 1024,
        extractor_dim: int = 1024,
        extractor_depth: int = 10,
        extractor_dim_head: int = 64,
        extractor_heads: int = 16,
        extractor_ff_mult: int = 4,
        num_id_tokens: int = 5,
        num_queries: int = 32,
        id_token_dim: int = 2048,
        injector_dim_head: int = 128,
        injector_heads: int = 16,
        router_dim: int = 2048,
        max_identities: int = 8,
        use_router: bool = True,
        routing_loss_type: str = "ce",
        reference_batch_semantics: bool = False,
        identity_sdpa: bool = True,
        fused_identity_injection: bool = True,
    ):
        super().__init__(
            num_attention_heads=num_attention_heads,
            attention_head_dim=attention_head_dim,
            in_channels=in_channels,
            out_channels=out_channels,
            flip_sin_to_cos=flip_sin_to_cos,
            freq_shift=freq_shift,
            time_embed_dim=time_embed_dim,
            ofs_embed_dim=ofs_embed_dim,
            text_embed_dim=text_embed_dim,
            num_layers=num_layers,
            dropout=dropout,
            attention_bias=attention_bias,
            sample_width=sample_width,
            sample_height=sample_height,
            sample_frames=sample_frames,
            patch_size=patch_size,
            patch_size_t=patch_size_t,
            temporal_compression_ratio=temporal_compression_ratio,
            max_text_seq_length=max_text_seq_length,
            activation_fn=activation_fn,
            timestep_activation_fn=timestep_activation_fn,
            norm_elementwise_affine=norm_elementwise_affine,
            norm_eps=norm_eps,
            spatial_interpolation_scale=spatial_interpolation_scale,
            temporal_interpolation_scale=temporal_interpolation_scale,
            use_rotary_positional_embeddings=use_rotary_positional_embeddings,
            use_learned_positional_embeddings=use_learned_positional_embeddings,
            patch_bias=patch_bias,
        )
        if routing_loss_type not in ("ce", "mse"):
            raise ValueError(f"routing_loss_type must be 'ce' or 'mse', got {routing_loss_type!r}")
        if vit_scale_indices is not None and len(vit_scale_indices) != num_vit_scales:
            raise ValueError(f"vit_scale_indices {vit_scale_indices} must name num_vit_scales={num_vit_scales} scales")
        if cross_attn_interval < 1:
            raise ValueError(f"cross_attn_interval must be >= 1, got {cross_attn_interval}")
        inner_dim = num_attention_heads * attention_head_dim
        num_points = len(self.injection_layers(num_layers, cross_attn_interval))
        self.local_facial_extractor = MultiScaleProjector(
            id_dim=id_embed_dim,
            vit_dim=vit_dim,
            mapping_hidden_dim=mapping_hidden_dim,
            dim=extractor_dim,
            depth=extractor_depth,
            dim_head=extractor_dim_head,
            heads=extractor_heads,
            num_id_tokens=num_id_tokens,
            num_queries=num_queries,
            output_dim=id_token_dim,
            ff_mult=extractor_ff_mult,
            num_scales=num_vit_scales,
            use_sdpa=identity_sdpa,
        )
        self.perceiver_cross_attention = nn.ModuleList(
            PerceiverCrossAttention(inner_dim, injector_dim_head, injector_heads, id_token_dim, identity_sdpa)
            for _ in range(num_points)
        )
        self.router = nn.ModuleList(
            IDRouter(inner_dim, id_token_dim, num_queries, router_dim) for _ in range(num_points)
        )

    @classmethod
    def from_backbone(cls, folder: str | Path, torch_dtype: torch.dtype | None = None, **face_config: Any) -> "IngredientsTransformer3DModel":
        """A CogVideoX transformer folder (e.g. CogVideoX-5B-I2V's `transformer/`) with new identity modules.

        The backbone weights load strictly; only the projector, injectors and routers are new.
        """
        backbone = CogVideoXTransformer3DModel.from_pretrained(folder, torch_dtype=torch_dtype, local_files_only=True)
        config = {k: v for k, v in backbone.config.items() if not k.startswith("_")}
        state = backbone.state_dict()
        if config["in_channels"] == config["out_channels"]:
            # a text-to-video backbone: append the image-condition input channels, zero-initialised,
            # so the converted model starts as the T2V model it came from
            config["in_channels"] *= 2
            weight = state["patch_embed.proj.weight"]  # [D, C, p, p] -> [D, 2C, p, p]
            state["patch_embed.proj.weight"] = torch.cat([weight, torch.zeros_like(weight)], dim=1)
        model = cls(**{**config, **face_config})
        missing, unexpected = model.load_state_dict(state, strict=False)
        new = ("local_facial_extractor.", "perceiver_cross_attention.", "router.")
        if unexpected or any(not k.startswith(new) for k in missing):
            raise ValueError(f"{folder} is not a CogVideoX transformer: unexpected {unexpected[:3]}, missing {missing[:3]}")
        return model.to(dtype=torch_dtype) if torch_dtype is not None else model

    @staticmethod
    def injection_layers(num_layers: int, interval: int) -> list[int]:
        """Indices of the blocks after which identity features are injected."""
        return [i for i in range(num_layers) if i % interval == 0]

    # ------------------------------------------------------------------ identities
    def encode_identities(
        self,
        id_cond: torch.Tensor | list[torch.Tensor],
        id_vit_hidden: list,
        id_mask: torch.Tensor | None = None,
        batch_size: int | None = None,
    ) -> IdentityBatch:
        """Photo features -> padded ID tokens, computed once and reusable across steps and guidance branches.

        Accepts the reference's form (`id_cond`: list of K tensors [1, D]; `id_vit_hidden`: list of K
        lists of scales [1, T, Dv]; shared by the whole batch) or ours (`id_cond` [B, K, D];
        `id_vit_hidden`: scales x [B, K, T, Dv]; `id_mask` [B, K] marks real identities).
        """
        if isinstance(id_cond, (list, tuple)):
            if len(id_cond) == 0:
                raise ValueError("id_cond is an empty list: at least one identity is needed")
            if len(id_vit_hidden) != len(id_cond):
                raise ValueError(f"id_vit_hidden has {len(id_vit_hidden)} identities but id_cond has {len(id_cond)}")
            # K x [1, D] -> [1, K, D]; K x scales x [1, T, Dv] -> scales x [1, K, T, Dv]
            cond = torch.stack([c.reshape(-1, c.shape[-1])[0] for c in id_cond])[None]
            vit = [torch.stack([ident[s][0] for ident in id_vit_hidden])[None] for s in range(len(id_vit_hidden[0]))]
            mask = torch.ones(1, len(id_cond), dtype=torch.bool, device=cond.device)
        else:
            cond, vit = id_cond, list(id_vit_hidden)
            if cond.ndim != 3:
                raise ValueError(f"id_cond must be [B, K, D] or a list of K tensors [1, D], got shape {tuple(cond.shape)}")
            mask = torch.ones(cond.shape[:2], dtype=torch.bool, device=cond.device) if id_mask is None else id_mask.bool()
        if self.config.vit_scale_indices is not None:
            # e.g. the single-scale ablation keeps only the finest of the face stack's 5 scales
            vit = [vit[i] for i in self.config.vit_scale_indices]
        k = cond.shape[1]
        if k > self.config.max_identities:
            raise ValueError(f"{k} identities given; this model takes at most max_identities={self.config.max_identities}")
        if cond.shape[-1] != self.config.id_embed_dim:
            raise ValueError(f"id_cond has width {cond.shape[-1]}, the model expects id_embed_dim={self.config.id_embed_dim}")
        if len(vit) != self.config.num_vit_scales:
            raise ValueError(f"id_vit_hidden has {len(vit)} scales, the model expects num_vit_scales={self.config.num_vit_scales}")
        tokens = self.project_identities(cond, vit, mask)
        if batch_size is not None and tokens.shape[0] == 1 and batch_size > 1:
            tokens = tokens.expand(batch_size, -1, -1, -1)
            mask = mask.expand(batch_size, -1)
        return IdentityBatch(tokens=tokens, mask=mask)

    def project_identities(self, cond: torch.Tensor, vit: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        """cond [B, K, D], vit scales x [B, K, T, Dv], mask [B, K] -> ID tokens [B, K, Q, D_id], zero where masked.

        Static shapes: all B x K slots run through the projector (it treats each slot on its own) and
        the absent ones are zeroed afterwards, so no shape depends on the mask's values (boolean
        indexing would break a compiled graph and FakeTensorMode). Absent slots' inputs are zeroed
        first, so whatever padding they hold (NaN included) cannot leak into the tokens or gradients.
        """
        dtype = self.local_facial_extractor.latents.dtype
        b, k = mask.shape
        # [B, K, D] -> [B*K, D]; scales x [B, K, T, Dv] -> scales x [B*K, T, Dv]
        flat_cond = torch.where(mask[..., None], cond, 0).to(dtype).reshape(b * k, cond.shape[-1])
        flat_vit = [torch.where(mask[..., None, None], v, 0).to(dtype).reshape(b * k, *v.shape[2:]) for v in vit]
        tokens = self.local_facial_extractor(flat_cond, flat_vit)  # [B*K, Q, D_id]
        tokens = tokens.reshape(b, k, *tokens.shape[1:])  # [B, K, Q, D_id]
        return torch.where(mask[..., None, None], tokens, 0)

    # ------------------------------------------------------------------ forward
    @apply_lora_scale("attention_kwargs")
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
    ) -> tuple | IngredientsTransformerOutput:
        """Denoise `hidden_states` [B, F, 2C, H, W] (noisy latents ⊕ image latents).

        Identities come as photo features (`id_cond`, `id_vit_hidden`, optional `id_mask`, see
        `encode_identities`) or precomputed (`identities`). With `index_mask` [B, N] the routing
        loss is returned. `return_dict=False` gives `(sample,)` or `(sample, routing_loss)`.
        """
        batch_size, num_frames, _, height, width = hidden_states.shape
        ref_batch = self.config.reference_batch_semantics if reference_batch_semantics is None else reference_batch_semantics
        routed = self.config.use_router if use_router is None else use_router
        identities = self.batch_identities(identities, id_cond, id_vit_hidden, id_mask, hidden_states)
        # 1-2. Time and patch embedding
        hidden_states, encoder_hidden_states, emb = self.embed_inputs(hidden_states, encoder_hidden_states, timestep, timestep_cond, ofs)
        # 3. Transformer blocks, identity injection after every `cross_attn_interval`-th block
        hidden_states, all_logits = self.run_blocks(
            hidden_states, encoder_hidden_states, emb, image_rotary_emb, attention_kwargs, identities, ref_batch, routed
        )
        # 4-5. Final block and unpatchify
        output = self.unpatchify_output(hidden_states, emb, (batch_size, num_frames, height, width))

        loss = None
        if index_mask is not None:
            if identities is None:
                raise ValueError("index_mask was given without identities: the routing loss needs id_cond or identities")
            if not all_logits:
                raise ValueError("index_mask was given but the model has no router (use_router=False)")
            # reference batch semantics: the logits of sample 0 stand for every sample
            logits_b = [z.expand(batch_size, -1, -1) for z in all_logits]
            loss = routing_loss(logits_b, index_mask.to(hidden_states.device), identities.mask, self.config.routing_loss_type)

        if not return_dict:
            out = (output,) if loss is None else (output, loss)
            return out + (all_logits,) if return_routing_logits else out
        return IngredientsTransformerOutput(
            sample=output, routing_loss=loss, routing_logits=all_logits if return_routing_logits else None
        )

    # ------------------------------------------------------------------ forward steps
    def batch_identities(
        self, identities: IdentityBatch | None, id_cond, id_vit_hidden, id_mask, hidden_states: torch.Tensor
    ) -> IdentityBatch | None:
        """Identities for a forward: encoded from photo features when needed, on the right device, batch B."""
        batch_size = hidden_states.shape[0]
        if identities is None and id_cond is not None:
            identities = self.encode_identities(id_cond, id_vit_hidden, id_mask, batch_size=batch_size)
        if identities is None:
            return None
        identities = identities.to(hidden_states.device)
        if identities.tokens.shape[0] not in (1, batch_size):
            raise ValueError(f"identities have batch {identities.tokens.shape[0]}, hidden_states have {batch_size}")
        if identities.tokens.shape[0] == 1 and batch_size > 1:
            identities = IdentityBatch(identities.tokens.expand(batch_size, -1, -1, -1), identities.mask.expand(batch_size, -1))
        return identities

    def embed_inputs(self, hidden_states, encoder_hidden_states, timestep, timestep_cond=None, ofs=None):
        """Time embedding and patch embedding -> (video tokens [B, N, D], text tokens [B, T, D], emb [B|1, E])."""
        t_emb = self.time_proj(timestep).to(dtype=hidden_states.dtype)
        emb = self.time_embedding(t_emb, timestep_cond)
        if self.ofs_embedding is not None:
            emb = emb + self.ofs_embedding(self.ofs_proj(ofs).to(dtype=hidden_states.dtype))
        # [B, F, C, H, W] -> [B, T_text + F*H/p*W/p, D]
        tokens = self.embedding_dropout(self.patch_embed(encoder_hidden_states, hidden_states))
        text_seq_length = encoder_hidden_states.shape[1]
        return tokens[:, text_seq_length:], tokens[:, :text_seq_length], emb

    def run_blocks(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        emb: torch.Tensor,
        image_rotary_emb,
        attention_kwargs,
        identities: IdentityBatch | None,
        ref_batch: bool,
        routed: bool,
        start: int = 0,
        inject_before_start: bool = False,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Blocks `start`.. with the identity injection after every `cross_attn_interval`-th block.

        `inject_before_start`: block `start - 1` already ran outside (e.g. a step cache's first block)
        and its injection is still due. Returns (video tokens, routing logits per injection point).
        """
        interval = self.config.cross_attn_interval
        all_logits: list[torch.Tensor] = []
        first = start - 1 if inject_before_start else start
        tokens, mask = (None, None) if identities is None else (identities.tokens, identities.mask)
        for i in range(first, len(self.transformer_blocks)):
            run_block = i >= start
            inject = identities is not None and i % interval == 0
            if not (run_block or inject):
                continue
            args = (i, run_block, inject, ref_batch, routed, hidden_states, encoder_hidden_states, emb,
                    image_rotary_emb, attention_kwargs, tokens, mask)
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                # the injection is checkpointed with its block: its activations are recomputed in the
                # backward like the block's, not kept (21 injection points at full size)
                hidden_states, encoder_hidden_states, logits = self._gradient_checkpointing_func(self._block_step, *args)
            else:
                hidden_states, encoder_hidden_states, logits = self._block_step(*args)
            if logits is not None:
                all_logits.append(logits)
        return hidden_states, all_logits

    def _block_step(
        self, i: int, run_block: bool, inject: bool, ref_batch: bool, routed: bool, hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor, emb: torch.Tensor, image_rotary_emb, attention_kwargs,
        tokens: torch.Tensor | None, mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Block i (if `run_block`) then its identity injection (if `inject`): one unit of gradient checkpointing.

        ID tokens and mask come as tensors (not an IdentityBatch) so a checkpoint sees them as inputs.
        """
        if run_block:
            hidden_states, encoder_hidden_states = self.transformer_blocks[i](
                hidden_states=hidden_states,
                encoder_hidden_states=encoder_hidden_states,
                temb=emb,
                image_rotary_emb=image_rotary_emb,
                attention_kwargs=attention_kwargs,
            )
        logits = None
        if inject:
            hidden_states, logits = self._inject(
                i // self.config.cross_attn_interval, hidden_states, IdentityBatch(tokens, mask), ref_batch, routed
            )
        return hidden_states, encoder_hidden_states, logits

    def unpatchify_output(self, hidden_states: torch.Tensor, emb: torch.Tensor, shape: tuple[int, int, int, int]) -> torch.Tensor:
        """Final norms and projection, then [B, F*H/p*W/p, C*p*p] -> [B, F, C, H, W]."""
        batch_size, num_frames, height, width = shape
        hidden_states = self.norm_final(hidden_states)
        hidden_states = self.norm_out(hidden_states, temb=emb)
        hidden_states = self.proj_out(hidden_states)
        p = self.config.patch_size
        output = hidden_states.reshape(batch_size, num_frames, height // p, width // p, -1, p, p)
        return output.permute(0, 1, 4, 2, 5, 3, 6).flatten(5, 6).flatten(3, 4)

    def _inject(
        self, point: int, hidden_states: torch.Tensor, identities: IdentityBatch, ref_batch: bool, routed: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        router = self.router[point] if routed else None
        tokens, mask, h = identities.tokens, identities.mask, hidden_states
        if ref_batch:
            # the reference routes and injects with sample 0 and adds that to every sample
            tokens, mask, h = tokens[:1], mask[:1], hidden_states[:1]
        residual, logits = routed_injection(
            self.perceiver_cross_attention[point], router, tokens, mask, h, fused=self.config.fused_identity_injection
        )
        return hidden_states + self.config.local_face_scale * residual, logits
