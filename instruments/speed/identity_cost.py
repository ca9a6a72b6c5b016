"""Speed measurements: the identity modules' cost against the bare CogVideoX backbone.

`python -m instruments.speed.identity_cost identity-cost [--size full|reduced] [--threads 2] [--rounds 3] [--compile] [--out FILE]`
times one forward of the bare `CogVideoXTransformer3DModel` and of `IngredientsTransformer3DModel`
with the same backbone weights (K identities, ID tokens precomputed, and with the projector run in the
forward), interleaved round by round, and reports medians and ratios as JSON; `--compile` adds the
same forwards through `torch.compile(fullgraph=True)` and the compiled / eager ratios.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from diffusers import CogVideoXTransformer3DModel
from diffusers.models.embeddings import get_3d_rotary_pos_embed

from ingredients.files.atomic import write_text
from ingredients.models import IngredientsTransformer3DModel

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IdentityCostSize:
    """Backbone width/depth, latent grid, text length and identity-module sizes of one benchmark."""

    heads: int
    head_dim: int
    layers: int
    latent_frames: int
    latent_height: int
    latent_width: int
    text_tokens: int
    text_dim: int
    identities: int
    face: dict[str, int]


SIZES = {
    # issue 2's reference point: full width, 2 layers, 5 x 30 x 44 latents (1,650 tokens), 226 text
    # tokens, K = 2, full-size identity modules (the model's defaults)
    "full": IdentityCostSize(48, 64, 2, 5, 30, 44, 226, 4096, 2, {}),
    # the same shape of work at a size the default test suite can afford
    "reduced": IdentityCostSize(
        4, 32, 2, 3, 8, 12, 16, 64, 2,
        {"id_embed_dim": 48, "vit_dim": 32, "mapping_hidden_dim": 32, "extractor_dim": 32, "extractor_dim_head": 8,
         "extractor_heads": 4, "num_queries": 8, "id_token_dim": 64, "injector_dim_head": 16, "injector_heads": 4,
         "router_dim": 64},
    ),
}


def build_models(size: IdentityCostSize, seed: int = 0) -> tuple[CogVideoXTransformer3DModel, IngredientsTransformer3DModel]:
    """The bare backbone and ours with identical backbone weights (random init, float32)."""
    backbone = dict(
        num_attention_heads=size.heads,
        attention_head_dim=size.head_dim,
        in_channels=32,
        out_channels=16,
        text_embed_dim=size.text_dim,
        num_layers=size.layers,
        sample_frames=(size.latent_frames - 1) * 4 + 1,
        sample_height=size.latent_height,
        sample_width=size.latent_width,
        max_text_seq_length=size.text_tokens,
        use_rotary_positional_embeddings=True,
        use_learned_positional_embeddings=True,
    )
    torch.manual_seed(seed)
    bare = CogVideoXTransformer3DModel(**backbone).eval()
    ours = IngredientsTransformer3DModel(**backbone, cross_attn_interval=1, **size.face).eval()
    missing, unexpected = ours.load_state_dict(bare.state_dict(), strict=False)
    if unexpected or any(not k.startswith(("local_facial_extractor", "perceiver_cross_attention", "router")) for k in missing):
        raise RuntimeError(f"backbone weights did not transfer: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return bare, ours


def make_inputs(size: IdentityCostSize, ours: IngredientsTransformer3DModel, seed: int = 0) -> dict[str, Any]:
    """Random latents, text, timestep, RoPE and K identities' photo features for one sample."""
    g = torch.Generator().manual_seed(seed)
    cfg = ours.config
    vit_tokens = 577 if cfg.vit_dim == 1024 else 17
    rope = get_3d_rotary_pos_embed(
        embed_dim=size.head_dim,
        crops_coords=((0, 0), (size.latent_height // 2, size.latent_width // 2)),
        grid_size=(size.latent_height // 2, size.latent_width // 2),
        temporal_size=size.latent_frames,
    )
    return {
        "hidden_states": torch.randn(1, size.latent_frames, 32, size.latent_height, size.latent_width, generator=g),
        "encoder_hidden_states": torch.randn(1, size.text_tokens, size.text_dim, generator=g),
        "timestep": torch.tensor([500]),
        "image_rotary_emb": rope,
        "id_cond": torch.randn(1, size.identities, cfg.id_embed_dim, generator=g),
        "id_vit_hidden": [
            torch.randn(1, size.identities, vit_tokens, cfg.vit_dim, generator=g) for _ in range(cfg.num_vit_scales)
        ],
    }


def identity_cost_callables(
    bare: CogVideoXTransformer3DModel, ours: IngredientsTransformer3DModel, inputs: dict[str, Any]
) -> dict[str, Callable[[], torch.Tensor]]:
    """The three forwards to time; ID tokens for `ours_precomputed` are computed here, once."""
    common = {k: inputs[k] for k in ("hidden_states", "encoder_hidden_states", "timestep", "image_rotary_emb")}
    with torch.no_grad():
        identities = ours.encode_identities(inputs["id_cond"], inputs["id_vit_hidden"])

    def run(model, **extra):
        with torch.no_grad():
            return model(**common, **extra, return_dict=False)[0]

    return {
        "bare": lambda: run(bare),
        "ours_precomputed": lambda: run(ours, identities=identities),
        "ours_with_projector": lambda: run(ours, id_cond=inputs["id_cond"], id_vit_hidden=inputs["id_vit_hidden"]),
    }


def time_interleaved(fns: dict[str, Callable[[], Any]], rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call for each function, rounds interleaved so that load drift hits all alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def identity_cost(
    size_name: str = "reduced", threads: int = 2, rounds: int = 3, warmup: int = 1, compile: bool = False
) -> dict[str, Any]:
    """Median seconds per forward and the ratios against the bare backbone.

    `compile`: also time each forward through `torch.compile(model, fullgraph=True)` (inductor; compiled
    during the warm-up, not timed) and report compiled / eager ratios.
    """
    size = SIZES[size_name]
    torch.set_num_threads(threads)
    bare, ours = build_models(size)
    inputs = make_inputs(size, ours)
    fns = identity_cost_callables(bare, ours, inputs)
    if compile:
        compiled = identity_cost_callables(torch.compile(bare, fullgraph=True), torch.compile(ours, fullgraph=True), inputs)
        fns.update({f"{name}_compiled": fn for name, fn in compiled.items()})
    times = time_interleaved(fns, rounds, warmup)
    med = {name: statistics.median(t) for name, t in times.items()}
    extra = {f"ratio_compiled_vs_eager_{name}": med[f"{name}_compiled"] / med[name]
             for name in ("bare", "ours_precomputed", "ours_with_projector") if compile}
    return {
        "size": size_name,
        "threads": threads,
        "rounds": rounds,
        "video_tokens": size.latent_frames * (size.latent_height // 2) * (size.latent_width // 2),
        "identities": size.identities,
        "seconds": med,
        "all_seconds": times,
        "ratio_precomputed_vs_bare": med["ours_precomputed"] / med["bare"],
        "ratio_with_projector_vs_bare": med["ours_with_projector"] / med["bare"],
        **extra,
        "torch": torch.__version__,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m instruments.speed.identity_cost", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("identity-cost", help="identity modules vs bare backbone, one forward, CPU float32")
    p.add_argument("--size", choices=sorted(SIZES), default="reduced")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--compile", action="store_true", help="also time torch.compile(fullgraph=True) forwards (inductor)")
    p.add_argument("--out", type=Path, help="write the JSON result here (atomically)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    result = identity_cost(args.size, args.threads, args.rounds, args.warmup, args.compile)
    text = json.dumps(result, indent=2)
    if args.out:
        write_text(args.out, text + "\n")
    logger.info(
        "%s: bare %.3fs, ours (ID tokens precomputed) %.3fs = %.3fx, with projector %.3fs = %.3fx",
        args.size, result["seconds"]["bare"], result["seconds"]["ours_precomputed"], result["ratio_precomputed_vs_bare"],
        result["seconds"]["ours_with_projector"], result["ratio_with_projector_vs_bare"],
    )
    print(text)  # noqa: T201 - the command's output is the JSON result


if __name__ == "__main__":
    main()
