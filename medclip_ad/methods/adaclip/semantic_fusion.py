"""AdaCLIP's hybrid semantic fusion: an image embedding that carries the most anomalous patches.

A global embedding alone misses small anomalies; the patches the map finds most abnormal, grouped by
KMeans into semantic clusters, add what they look like. As in the reference, the 100 most abnormal
patches are the points, each the concatenation of its projected tokens of every feature layer; a
cluster's centre is the mean of its members' tokens over all layers, and the fused centroid the plain
mean of the cluster centres.

The clustering is the reference's scikit-learn KMeans (k-means++ with 2 + log k local trials, then
Lloyd steps until the labels settle or the centres move less than 1e-4 of the mean variance), written
as batched tensor code so it runs beside the model and survives TorchScript/ONNX export. The reference
leaves KMeans unseeded, drawing from numpy's global generator, which its test script seeds with 111;
here every image uses the draws of `numpy.random.RandomState(KMEANS_SEED)`, so a single-image
reference run and this code cluster alike, and the same image always gets the same score.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

TOP_PATCHES = 100
CLUSTERS = 20
CENTRE_WEIGHT = 0.2  # the global embedding gets the rest
KMEANS_SEED = 111  # the seed the reference's test.py gives numpy's global generator
KMEANS_MAX_STEPS = 300  # scikit-learn's max_iter
KMEANS_TOLERANCE = 1e-4  # scikit-learn's tol, relative to the mean per-feature variance
# A traced graph cannot stop early, so it unrolls this many Lloyd steps (100 points settle in far fewer).
TRACED_STEPS = 30


def fused_embedding(patch_tokens: list[torch.Tensor], abnormal_probability: torch.Tensor,
                    global_embedding: torch.Tensor) -> torch.Tensor:
    """Normalised tokens per layer (B, N, D), patch abnormal probabilities (B, N), global (B, D) -> (B, D)."""
    top = abnormal_probability.topk(min(abnormal_probability.shape[1], TOP_PATCHES), dim=1).indices
    picked = [tokens.gather(1, top.unsqueeze(-1).expand(-1, -1, tokens.shape[-1])) for tokens in patch_tokens]
    points = torch.cat(picked, dim=-1)  # (B, k, layers * D), the most abnormal patch first
    clusters = min(CLUSTERS, points.shape[1])
    labels = kmeans_labels(points.detach().double(), clusters)
    centre = F.normalize(mean_of_cluster_means(torch.stack(picked, dim=2).mean(dim=2), labels, clusters), dim=-1)
    return F.normalize(CENTRE_WEIGHT * centre + (1 - CENTRE_WEIGHT) * global_embedding.to(centre.dtype), dim=-1)


def kmeans_labels(points: torch.Tensor, clusters: int, seed: int = KMEANS_SEED) -> torch.Tensor:
    """Cluster index (B, M) of each of B sets of M points (B, M, D), as scikit-learn's KMeans(random_state=seed)."""
    points = points - points.mean(dim=1, keepdim=True)  # as scikit-learn does, for accurate distances
    centres = kmeans_plus_plus(points, clusters, seed)
    tolerance = points.var(dim=1, unbiased=False).mean(dim=-1) * KMEANS_TOLERANCE  # (B,)
    labels = _nearest_centre(points, centres)
    done = torch.zeros_like(tolerance, dtype=torch.bool)
    tracing = torch.jit.is_tracing()
    for _ in range(TRACED_STEPS if tracing else KMEANS_MAX_STEPS):
        sums, counts = _cluster_sums(points, labels, clusters)
        if not tracing and bool((counts == 0).any()):
            _relocate_empty_clusters(points, centres, labels, sums, counts)
        moved = torch.where(counts > 0, sums / counts.clamp(min=1), centres)
        shift = ((moved - centres) ** 2).sum(dim=(1, 2))
        moved_labels = _nearest_centre(points, moved)
        # A set that has converged keeps its labels and centres while the others go on.
        centres = torch.where(done[:, None, None], centres, moved)
        settled = (moved_labels == labels).all(dim=1) | (shift <= tolerance)
        labels = torch.where(done[:, None], labels, moved_labels)
        done = done | settled
        if not tracing and bool(done.all()):
            break
    return labels


def kmeans_plus_plus(points: torch.Tensor, clusters: int, seed: int = KMEANS_SEED) -> torch.Tensor:
    """Greedy k-means++ starting centres (B, K, D), drawing scikit-learn's random numbers for `seed`.

    The draws do not depend on the data, so they are made once, in scikit-learn's order: one for the
    first centre, then 2 + log K candidate thresholds per further centre.
    """
    batch, count, _ = points.shape
    trials = 2 + int(math.log(clusters))
    draws = np.random.RandomState(seed).random_sample(1 + (clusters - 1) * trials)
    uniform = np.cumsum(np.full(count, 1.0 / count))
    first = int(np.searchsorted(uniform / uniform[-1], draws[0], side="right"))  # numpy's choice(count)
    thresholds = torch.from_numpy(draws[1:]).to(points).reshape(clusters - 1, trials)
    rows = torch.arange(batch, device=points.device)
    squared_norms = (points * points).sum(-1)
    centres = [points[:, min(first, count - 1)]]
    closest = _squared_distances(points, squared_norms, centres[0][:, None])[:, 0]  # (B, M)
    potential = closest.sum(dim=-1)
    for step in range(clusters - 1):
        targets = thresholds[step] * potential[:, None]  # (B, trials)
        cumulative = closest.cumsum(dim=-1)
        # np.searchsorted(cumulative, targets): the first index whose running sum reaches the target.
        candidates = (cumulative[:, None, :] < targets[:, :, None]).sum(dim=-1).clamp(max=count - 1)
        candidate_points = points[rows[:, None], candidates]  # (B, trials, D)
        with_candidate = torch.minimum(closest[:, None], _squared_distances(points, squared_norms, candidate_points))
        best = with_candidate.sum(dim=-1).argmin(dim=-1)
        closest = with_candidate[rows, best]
        potential = closest.sum(dim=-1)
        centres.append(candidate_points[rows, best])
    return torch.stack(centres, dim=1)


def _relocate_empty_clusters(points: torch.Tensor, centres: torch.Tensor, labels: torch.Tensor,
                             sums: torch.Tensor, counts: torch.Tensor) -> None:
    """Give each empty cluster the point farthest from its centre, in place, as scikit-learn does (eager only)."""
    for row in torch.nonzero((counts[..., 0] == 0).any(dim=1)).flatten().tolist():
        empty = torch.nonzero(counts[row, :, 0] == 0).flatten()
        distances = ((points[row] - centres[row, labels[row]]) ** 2).sum(dim=-1)
        if float(distances.max()) == 0:
            continue  # fewer distinct points than clusters: nothing to move
        for cluster, far in zip(empty.tolist(), distances.argsort(descending=True)[:len(empty)].tolist()):
            source = int(labels[row, far])
            sums[row, source] -= points[row, far]
            counts[row, source] -= 1
            sums[row, cluster] = points[row, far]
            counts[row, cluster] = 1


def mean_of_cluster_means(points: torch.Tensor, labels: torch.Tensor, clusters: int) -> torch.Tensor:
    """The average over the non-empty clusters of each cluster's mean point: (B, M, D), (B, M) -> (B, D)."""
    sums, counts = _cluster_sums(points, labels, clusters)
    occupied = (counts > 0).to(points.dtype)
    return (sums / counts.clamp(min=1) * occupied).sum(dim=1) / occupied.sum(dim=1)


def _squared_distances(points: torch.Tensor, squared_norms: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """|p - c|^2 (B, C, M) of every point (B, M, D) to C centres per set (B, C, D), without a difference tensor."""
    cross = centres @ points.transpose(1, 2)
    return (squared_norms[:, None, :] - 2 * cross + (centres * centres).sum(-1, keepdim=True)).clamp(min=0)


def _cluster_sums(points: torch.Tensor, labels: torch.Tensor, clusters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per cluster the sum of its points (B, K, D) and their count (B, K, 1), by scatter-add (no B x M x K x D work)."""
    batch, _, dim = points.shape
    sums = points.new_zeros(batch, clusters, dim).scatter_add(1, labels.unsqueeze(-1).expand(-1, -1, dim), points)
    counts = points.new_zeros(batch, clusters, 1).scatter_add(1, labels.unsqueeze(-1), torch.ones_like(points[..., :1]))
    return sums, counts


def _nearest_centre(points: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Index of each point's nearest centre: argmin of |c|^2 - 2 p.c, the squared distance less the point's own
    |p|^2, written out so that it exports to every runtime."""
    return ((centres * centres).sum(-1).unsqueeze(1) - 2 * points @ centres.transpose(1, 2)).argmin(dim=-1)
