"""Clustering face tracks into identities from recognizer embeddings.

Average-linkage agglomerative clustering on cosine similarity, stopped at the backend's verification
threshold, with cannot-link constraints: two tracks visible in the same frame are different people
and never end up in one cluster.
"""

from __future__ import annotations

import numpy as np


def cluster_tracks(embeddings: np.ndarray, cannot_link: np.ndarray, threshold: float) -> np.ndarray:
    """Cluster labels [N] (0..C-1, numbered in order of first member) for track embeddings [N, D].

    embeddings: L2-normalised rows. cannot_link: bool [N, N], True where two tracks co-occur.
    Two clusters merge while their average pairwise cosine is >= threshold and no cannot-link
    pair spans them; the most similar admissible pair merges first (ties: lowest indices).
    """
    emb = np.asarray(embeddings, dtype=np.float64)
    n = emb.shape[0]
    if emb.ndim != 2:
        raise ValueError(f"embeddings must be [N, D], got shape {emb.shape}")
    cannot_link = np.asarray(cannot_link, dtype=bool)
    if cannot_link.shape != (n, n):
        raise ValueError(f"cannot_link must be [{n}, {n}], got {cannot_link.shape}")
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    sim = emb @ emb.T  # [N, N] cosine
    clusters: list[list[int]] = [[i] for i in range(n)]
    while len(clusters) > 1:
        best, pair = -np.inf, None
        for a in range(len(clusters)):
            for b in range(a + 1, len(clusters)):
                ia, ib = clusters[a], clusters[b]
                if cannot_link[np.ix_(ia, ib)].any():
                    continue
                s = float(sim[np.ix_(ia, ib)].mean())
                if s > best:
                    best, pair = s, (a, b)
        if pair is None or best < threshold:
            break
        a, b = pair
        clusters[a] = sorted(clusters[a] + clusters[b])
        del clusters[b]
    clusters.sort(key=lambda c: c[0])
    labels = np.empty(n, dtype=np.int64)
    for k, members in enumerate(clusters):
        labels[members] = k
    return labels
