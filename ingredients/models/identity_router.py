"""ID injection and routing: per-identity cross-attention mixed per video token by a soft router.

At injection point n, for identities k with ID tokens `T_k` [Q, D]:
    feat_k = to_out(attn(to_q(LN(h)), to_kv(LN(T_k))))               (PerceiverCrossAttention)
    z[:, k] = to_q'(LN'(h)) . to_kv'(id_merge(LN''(T_k)))               (IDRouter)
    h += scale * sum_k softmax_k(z) * feat_k
Queries are shared by all identities and `to_out` has no bias, so the mix is taken before `to_out`
and the queries are projected once, not once per identity as the reference does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ingredients.models.projector import attention


class PerceiverCrossAttention(nn.Module):
    """Video tokens (queries) attend to one identity's ID tokens (keys/values)."""

    def __init__(self, dim: int = 3072, dim_head: int = 128, heads: int = 16, kv_dim: int = 2048, use_sdpa: bool = True):
        super().__init__()
        self.dim_head = dim_head
        self.heads = heads
        self.use_sdpa = use_sdpa
        inner_dim = dim_head * heads
        self.norm1 = nn.LayerNorm(kv_dim)
        self.norm2 = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner_dim, bias=False)
        self.to_kv = nn.Linear(kv_dim, inner_dim * 2, bias=False)
        self.to_out = nn.Linear(inner_dim, dim, bias=False)

    def attend(self, id_tokens: torch.Tensor, hidden_states: torch.Tensor) -> torch.Tensor:
        """Per-identity attention before `to_out`.

        id_tokens [B, K, Q, kv_dim], hidden_states [B, N, dim] -> [B, K, N, heads * dim_head].
        """
        b, n, _ = hidden_states.shape
        k_ids, q_len = id_tokens.shape[1], id_tokens.shape[2]
        # [B, N, H*d] -> [B, 1, H, N, d] -> [B, K, H, N, d] (a view; no copy per identity)
        query = self.to_q(self.norm2(hidden_states)).reshape(b, n, self.heads, self.dim_head).transpose(1, 2)
        query = query.unsqueeze(1).expand(b, k_ids, self.heads, n, self.dim_head)
        key, value = self.to_kv(self.norm1(id_tokens)).chunk(2, dim=-1)
        # [B, K, Q, H*d] -> [B, K, H, Q, d]
        key, value = (t.reshape(b, k_ids, q_len, self.heads, self.dim_head).transpose(2, 3) for t in (key, value))
        if self.use_sdpa:
            # [B, K, H, L, d] -> [B*K, H, L, d]: the fused kernels take 4-D inputs
            out = attention(
                query.reshape(b * k_ids, self.heads, n, self.dim_head),
                key.reshape(b * k_ids, self.heads, q_len, self.dim_head),
                value.reshape(b * k_ids, self.heads, q_len, self.dim_head),
                use_sdpa=True,
            ).reshape(b, k_ids, self.heads, n, self.dim_head)
        else:
            out = attention(query, key, value, use_sdpa=False)
        # [B, K, H, N, d] -> [B, K, N, H*d]
        return out.permute(0, 1, 3, 2, 4).reshape(b, k_ids, n, self.heads * self.dim_head)

    def folded_mix(self, id_tokens: torch.Tensor, hidden_states: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """`to_out(sum_k w_k attn_k)` with `to_q` folded into the keys and `to_out` into the values.

        id_tokens [B, K, Q, kv_dim], hidden_states [B, N, dim], weights [B, N, K] -> [B, N, dim].
        Scores are `x W_q,h^T k` = `x (W_q,h^T k)` and the output `sum P v W_out,h^T` = `P (v W_out,h^T)`,
        so the N video tokens cost 2 x N x dim x (heads x K x Q) multiply-adds instead of
        2 x N x dim x (heads x dim_head): cheaper whenever K x Q < dim_head (K <= 3 at full size).
        """
        b, n, dim = hidden_states.shape
        k_ids, q_len = id_tokens.shape[1], id_tokens.shape[2]
        heads, dim_head = self.heads, self.dim_head
        x = self.norm2(hidden_states)
        key, value = self.to_kv(self.norm1(id_tokens)).chunk(2, dim=-1)
        # [B, K, Q, H*d] -> [B, H, K*Q, d]
        key, value = (
            t.reshape(b, k_ids * q_len, heads, dim_head).transpose(1, 2) for t in (key, value)
        )
        w_q = self.to_q.weight.reshape(heads, dim_head, dim)  # [H, d, dim]
        w_out = self.to_out.weight.reshape(dim, heads, dim_head).transpose(0, 1)  # [H, dim, d]
        key_folded = (key @ w_q) * dim_head**-0.5  # [B, H, K*Q, dim]
        value_folded = value @ w_out.transpose(1, 2)  # [B, H, K*Q, dim]
        # [B, N, dim] x [B, dim, H*K*Q] -> [B, N, H, K, Q]
        scores = (x @ key_folded.reshape(b, heads * k_ids * q_len, dim).transpose(1, 2)).reshape(b, n, heads, k_ids, q_len)
        probs = torch.softmax(scores.float(), dim=-1).to(x.dtype) * weights[:, :, None, :, None]
        # [B, N, H*K*Q] x [B, H*K*Q, dim] -> [B, N, dim]
        return probs.reshape(b, n, heads * k_ids * q_len) @ value_folded.reshape(b, heads * k_ids * q_len, dim)

    def forward(self, id_tokens: torch.Tensor, hidden_states: torch.Tensor) -> torch.Tensor:
        """One identity, the reference's call: id_tokens [B, Q, kv_dim], hidden_states [B, N, dim] -> [B, N, dim]."""
        return self.to_out(self.attend(id_tokens.unsqueeze(1), hidden_states)[:, 0])


class IDRouter(nn.Module):
    """Routing logits: which identity each video token should take its features from."""

    def __init__(self, dim: int = 3072, id_dim: int = 2048, num_id_tokens: int = 32, router_dim: int = 2048):
        super().__init__()
        self.norm1 = nn.LayerNorm(id_dim)
        self.norm2 = nn.LayerNorm(dim)
        self.id_merge = nn.Linear(num_id_tokens, 1, bias=False)
        self.to_q = nn.Linear(dim, router_dim, bias=False)
        self.to_kv = nn.Linear(id_dim, router_dim, bias=False)

    def forward(self, id_tokens: torch.Tensor, hidden_states: torch.Tensor) -> torch.Tensor:
        """id_tokens [B, K, Q, id_dim], hidden_states [B, N, dim] -> raw logits [B, N, K] (no scaling).

        `to_q(x) . k = x . (W_q^T k)`: the K keys are folded through `to_q` once, so the N video
        tokens cost N x dim x K instead of N x dim x router_dim.
        """
        # [B, K, Q, D] -> [B, K, D, Q] -> id_merge -> [B, K, D]
        merged = self.id_merge(self.norm1(id_tokens).transpose(-1, -2)).squeeze(-1)
        key = self.to_kv(merged)  # [B, K, R]
        folded = key @ self.to_q.weight  # [B, K, dim]
        return torch.einsum("bnc,bkc->bnk", self.norm2(hidden_states), folded)


def routed_injection(
    injector: PerceiverCrossAttention,
    router: IDRouter | None,
    id_tokens: torch.Tensor,
    id_mask: torch.Tensor,
    hidden_states: torch.Tensor,
    fused: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The identity residual for one injection point.

    id_tokens [B, K, Q, D], id_mask [B, K] bool (padded identities False), hidden_states [B, N, C]
    -> (residual [B, N, C], routing logits [B, N, K] or None without a router).
    Without a router every valid identity gets the same weight (the 'no router' baseline).
    `fused=True` mixes identities before `to_out` (and folds the projections into the ID tokens when
    that is cheaper); `fused=False` applies `to_out` per identity and sums afterwards, as the
    reference does.
    """
    logits = router(id_tokens, hidden_states) if router is not None else None
    if logits is not None:
        weights = routing_weights(logits, id_mask).to(hidden_states.dtype)  # [B, N, K]
    else:
        weights = (id_mask.float() / id_mask.float().sum(-1, keepdim=True).clamp(min=1)).to(hidden_states.dtype)
        weights = weights[:, None, :].expand(-1, hidden_states.shape[1], -1)
    k_ids, q_len = id_tokens.shape[1], id_tokens.shape[2]
    if fused and k_ids * q_len < injector.dim_head:
        return injector.folded_mix(id_tokens, hidden_states, weights), logits
    feats = injector.attend(id_tokens, hidden_states)  # [B, K, N, inner]
    if fused:
        mixed = torch.einsum("bkni,bnk->bni", feats, weights)
        return injector.to_out(mixed), logits
    per_identity = injector.to_out(feats)  # [B, K, N, C]
    return torch.einsum("bknc,bnk->bnc", per_identity, weights), logits


def _mask_logits(logits: torch.Tensor, id_mask: torch.Tensor) -> torch.Tensor:
    """Padded identities get -inf; a sample without identities gets zeros (its weights are zeroed later)."""
    has_id = id_mask.any(-1)[:, None, None]
    return logits.float().masked_fill(~id_mask[:, None, :], float("-inf")).masked_fill(~has_id, 0.0)


def routing_weights(logits: torch.Tensor, id_mask: torch.Tensor) -> torch.Tensor:
    """Soft routing weights [B, N, K] in float32; all zero for a sample without identities."""
    weights = torch.softmax(_mask_logits(logits, id_mask), dim=-1)
    return weights * id_mask.any(-1)[:, None, None]


def _tracing(t: torch.Tensor) -> bool:
    """True while `t` has shapes but no values: under torch.compile or as a fake tensor."""
    from torch._subclasses.fake_tensor import is_fake

    return torch.compiler.is_compiling() or is_fake(t)


def routing_loss(
    logits: list[torch.Tensor], index_mask: torch.Tensor, id_mask: torch.Tensor, kind: str = "ce"
) -> torch.Tensor:
    """Router supervision, averaged over injection points, then over the batch.

    logits: one [B, N, K] per injection point; index_mask [B, N] long with values -1 (background,
    ignored) or 0..K-1; id_mask [B, K]. `kind="ce"` is the paper's cross-entropy; `"mse"` regresses
    softmax weights onto one-hot targets (the paper's ablation). A sample without any labelled token
    contributes 0 (the reference's NaN -> 0).
    """
    if kind not in ("ce", "mse"):
        raise ValueError(f"routing loss kind must be 'ce' or 'mse', got {kind!r}")
    if index_mask.shape[0] != id_mask.shape[0]:
        raise ValueError(f"index_mask has batch {index_mask.shape[0]} but the identities have batch {id_mask.shape[0]}")
    k_valid = id_mask.sum(-1)  # [B]
    # a check on the values: only where there are values (not while torch.compile or a FakeTensorMode
    # traces shapes; the data pipeline labels 0..K-1 by construction)
    if not _tracing(index_mask) and bool((index_mask >= k_valid[:, None]).any()):
        raise ValueError(
            f"index_mask labels must be -1 or < the sample's number of identities {k_valid.tolist()}, "
            f"got max {int(index_mask.max())}"
        )
    labelled = (index_mask >= 0) & id_mask.any(-1)[:, None]  # [B, N]
    counts = labelled.sum(-1)  # [B]
    target = index_mask.clamp(min=0)
    per_sample = torch.zeros(index_mask.shape[0], device=index_mask.device, dtype=torch.float32)
    for z in logits:
        z = _mask_logits(z, id_mask)
        if kind == "ce":
            # [B, N, K] -> [B, K, N] as cross_entropy wants classes on dim 1
            token_loss = F.cross_entropy(z.transpose(1, 2), target, reduction="none")
        else:
            probs = torch.softmax(z, dim=-1)
            one_hot = F.one_hot(target, num_classes=z.shape[-1]).float()
            token_loss = ((probs - one_hot) ** 2).sum(-1)
        token_loss = token_loss.masked_fill(~labelled, 0.0)
        per_sample = per_sample + token_loss.sum(-1) / counts.clamp(min=1)
    per_sample = torch.where(counts > 0, per_sample / max(len(logits), 1), torch.zeros_like(per_sample))
    return per_sample.mean()
