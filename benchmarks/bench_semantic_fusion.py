"""AdaCLIP's semantic fusion: our batched tensor KMeans against the reference's per-image scikit-learn loop.

    python benchmarks/bench_semantic_fusion.py [--images 8] [--device cpu]

Shapes are the published model's: 37 x 37 patches at 518 px, 4 feature layers, 768-d joint space, the
100 most abnormal patches with their 4 layers' tokens concatenated. The reference clusters each image
with scikit-learn's KMeans (unseeded; here with the seed ours draws for, as a fresh reference run
does). Prints the machine, both median times and their ratio, and how far the two fused embeddings
are apart (1 - cosine) on random tokens, where clusters are weak and any difference would show.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from medclip_ad.methods.adaclip.semantic_fusion import (
    CENTRE_WEIGHT,
    CLUSTERS,
    KMEANS_SEED,
    TOP_PATCHES,
    fused_embedding,
)
from sklearn.cluster import KMeans

from machine import machine_line

PATCHES, LAYERS, DIM = 37 * 37, 4, 768


def reference_style(patch_tokens: list[torch.Tensor], abnormal: torch.Tensor, global_embedding: torch.Tensor):
    """One scikit-learn KMeans per image, as the reference fuses (seeded as a fresh reference run)."""
    fused = []
    for index in range(abnormal.shape[0]):
        top = abnormal[index].topk(TOP_PATCHES).indices
        members = torch.cat([tokens[index, top] for tokens in patch_tokens], dim=-1).numpy()
        labels = KMeans(n_clusters=CLUSTERS, random_state=KMEANS_SEED, n_init="auto").fit_predict(members)
        per_patch = members.reshape(len(top), len(patch_tokens), -1).mean(axis=1)
        centre = np.mean([per_patch[labels == cluster].mean(axis=0) for cluster in np.unique(labels)], axis=0)
        centre = F.normalize(torch.from_numpy(centre), dim=-1)
        fused.append(F.normalize(CENTRE_WEIGHT * centre + (1 - CENTRE_WEIGHT) * global_embedding[index], dim=-1))
    return torch.stack(fused)


def timed(repeats: int, function, *args) -> tuple[torch.Tensor, float]:
    """The value of `function(*args)` and the median seconds of `repeats` calls."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        value = function(*args)
        if value.is_cuda:
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    return value, statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5, help="calls per measurement; the median is printed")
    args = parser.parse_args()
    print(machine_line(args.device))

    generator = torch.Generator().manual_seed(0)
    tokens = [F.normalize(torch.randn(args.images, PATCHES, DIM, generator=generator), dim=-1) for _ in range(LAYERS)]
    abnormal = torch.rand(args.images, PATCHES, generator=generator)
    global_embedding = F.normalize(torch.randn(args.images, DIM, generator=generator), dim=-1)

    theirs, reference_seconds = timed(args.repeats, reference_style, tokens, abnormal, global_embedding)
    on_device = [t.to(args.device) for t in tokens], abnormal.to(args.device), global_embedding.to(args.device)
    fused_embedding(*on_device)  # warm-up
    ours, batched_seconds = timed(args.repeats, fused_embedding, *on_device)
    gap = 1 - (ours.cpu() * theirs).sum(dim=-1)
    print(f"reference-style scikit-learn loop: {reference_seconds * 1000:.1f} ms for {args.images} images")
    print(f"batched tensor KMeans ({args.device}): {batched_seconds * 1000:.1f} ms "
          f"({reference_seconds / batched_seconds:.1f}x)")
    print(f"fused embeddings, 1 - cosine: mean {gap.mean():.2e}, max {gap.max():.2e}")


if __name__ == "__main__":
    main()
