"""Multi-scale projector: reference photo features -> ID tokens (the reference's `LocalFacialExtractor`).

Parameter names follow the authors' checkpoint (`latents`, `proj_out`, `layers.{i}.{0,1}`,
`mapping_{s}`, `id_embedding_mapping`), so their weights load without renaming.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """Linear-LN-LeakyReLU x2 then Linear: the reference's `mapping_s` / `id_embedding_mapping`."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim),
        nn.LayerNorm(hidden_dim),
        nn.LeakyReLU(),
        nn.Linear(hidden_dim, hidden_dim),
        nn.LayerNorm(hidden_dim),
        nn.LeakyReLU(),
        nn.Linear(hidden_dim, out_dim),
    )


class PerceiverAttention(nn.Module):
    """Perceiver attention: latents attend over [context; latents].

    Scores are `(q * s)(k * s)^T` with `s = dim_head ** -0.25` and the softmax runs in float32, as in
    the reference; `use_sdpa` computes the same function with `scaled_dot_product_attention`.
    """

    def __init__(self, dim: int, dim_head: int, heads: int, use_sdpa: bool = True):
        super().__init__()
        self.dim_head = dim_head
        self.heads = heads
        self.use_sdpa = use_sdpa
        inner_dim = dim_head * heads
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner_dim, bias=False)
        self.to_kv = nn.Linear(dim, inner_dim * 2, bias=False)
        self.to_out = nn.Linear(inner_dim, dim, bias=False)

    def forward(self, context: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        context = self.norm1(context)
        latents = self.norm2(latents)
        n, seq_len, _ = latents.shape
        query = self.to_q(latents)
        key, value = self.to_kv(torch.cat((context, latents), dim=-2)).chunk(2, dim=-1)
        # [N, L, H*d] -> [N, H, L, d]
        query, key, value = (
            t.reshape(n, -1, self.heads, self.dim_head).transpose(1, 2) for t in (query, key, value)
        )
        out = attention(query, key, value, self.use_sdpa)
        # [N, H, L, d] -> [N, L, H*d]
        out = out.transpose(1, 2).reshape(n, seq_len, -1)
        return self.to_out(out)


def attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, use_sdpa: bool) -> torch.Tensor:
    """Softmax attention over the last two axes with the reference's 1/sqrt(dim_head) scaling."""
    if use_sdpa:
        return F.scaled_dot_product_attention(query, key, value)
    scale = query.shape[-1] ** -0.25
    weight = (query * scale) @ (key * scale).transpose(-2, -1)
    weight = torch.softmax(weight.float(), dim=-1).type(weight.dtype)
    return weight @ value


class MultiScaleProjector(nn.Module):
    """Perceiver resampler over an identity vector and `num_scales` ViT hidden states.

    `id_cond` becomes `num_id_tokens` tokens; for each scale (coarse to fine) that scale's tokens
    pass their own MLP and join the ID tokens as context for `depth / num_scales` layers of
    (attention + feed-forward). The `num_queries` learned latents are kept and projected to
    `output_dim`.
    """

    def __init__(
        self,
        id_dim: int = 1280,
        vit_dim: int = 1024,
        mapping_hidden_dim: int = 1024,
        dim: int = 1024,
        depth: int = 10,
        dim_head: int = 64,
        heads: int = 16,
        num_id_tokens: int = 5,
        num_queries: int = 32,
        output_dim: int = 2048,
        ff_mult: int = 4,
        num_scales: int = 5,
        use_sdpa: bool = True,
    ):
        super().__init__()
        if depth % num_scales != 0:
            raise ValueError(f"extractor_depth={depth} must be a multiple of num_vit_scales={num_scales}")
        self.dim = dim
        self.num_id_tokens = num_id_tokens
        self.num_queries = num_queries
        self.num_scales = num_scales
        self.layers_per_scale = depth // num_scales
        scale = dim**-0.5
        self.latents = nn.Parameter(torch.randn(1, num_queries, dim) * scale)
        self.proj_out = nn.Parameter(scale * torch.randn(dim, output_dim))
        self.layers = nn.ModuleList(
            nn.ModuleList(
                [
                    PerceiverAttention(dim, dim_head, heads, use_sdpa),
                    nn.Sequential(
                        nn.LayerNorm(dim),
                        nn.Linear(dim, dim * ff_mult, bias=False),
                        nn.GELU(),
                        nn.Linear(dim * ff_mult, dim, bias=False),
                    ),
                ]
            )
            for _ in range(depth)
        )
        for s in range(num_scales):
            setattr(self, f"mapping_{s}", _mlp(vit_dim, mapping_hidden_dim, dim))
        self.id_embedding_mapping = _mlp(id_dim, mapping_hidden_dim, dim * num_id_tokens)

    def forward(self, id_cond: torch.Tensor, vit_hidden: list[torch.Tensor]) -> torch.Tensor:
        """id_cond [N, id_dim], vit_hidden num_scales x [N, T, vit_dim] -> ID tokens [N, num_queries, output_dim]."""
        if len(vit_hidden) != self.num_scales:
            raise ValueError(f"expected {self.num_scales} ViT hidden states, got {len(vit_hidden)}")
        n = id_cond.shape[0]
        latents = self.latents.expand(n, -1, -1)
        # [N, id_dim] -> [N, num_id_tokens, dim]
        id_tokens = self.id_embedding_mapping(id_cond).reshape(n, self.num_id_tokens, self.dim)
        latents = torch.cat((latents, id_tokens), dim=1)
        for s in range(self.num_scales):
            context = torch.cat((id_tokens, getattr(self, f"mapping_{s}")(vit_hidden[s])), dim=1)
            for attn, ff in self.layers[s * self.layers_per_scale : (s + 1) * self.layers_per_scale]:
                latents = attn(context, latents) + latents
                latents = ff(latents) + latents
        return latents[:, : self.num_queries] @ self.proj_out
