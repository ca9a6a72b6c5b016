"""Per-sample random streams keyed by (seed, micro-step, global sample index).

Every random choice of a training sample (timestep, dropouts, latent samples, noise, identity order,
image-condition noise) is drawn from its own generator, so the draws do not depend on how the global
batch is split across processes or on what ran before: one process with batch 4 and two processes
with batch 2 see the same numbers, and a resumed run continues exactly.
"""

from __future__ import annotations

import numpy as np
import torch

# streams: training samples and validation samples never share draws
TRAIN_STREAM = 0
VALIDATION_STREAM = 1
PERMUTATION_STREAM = 2  # identity order of training samples (kept apart so it changes no other draw)
IMAGE_NOISE_STREAM = 3  # noise augmentation of the canvas (kept apart likewise: turning it on changes no other draw)


def sample_seed(seed: int, step: int, index: int, stream: int = TRAIN_STREAM) -> int:
    """A 63-bit seed mixed from the four integers (numpy SeedSequence)."""
    for name, value in (("seed", seed), ("step", step), ("index", index), ("stream", stream)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0 for a sample seed, got {value}")
    state = np.random.SeedSequence([seed, step, index, stream]).generate_state(1, dtype=np.uint64)[0]
    return int(state & np.uint64((1 << 63) - 1))


def sample_generators(seed: int, step: int, indices: range | list[int], stream: int = TRAIN_STREAM) -> list[torch.Generator]:
    """One CPU generator per global sample index."""
    return [torch.Generator().manual_seed(sample_seed(seed, step, i, stream)) for i in indices]
