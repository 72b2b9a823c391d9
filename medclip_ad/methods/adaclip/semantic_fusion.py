"""AdaCLIP's hybrid semantic fusion: an image embedding that carries the most anomalous patches.

A global embedding alone misses small anomalies; the patches the map finds most abnormal, grouped by
KMeans into semantic clusters, add what they look like.

The clustering is plain tensor code, batched over images, so it runs on the GPU beside the model and
survives TorchScript/ONNX export. It is deterministic where the reference is unseeded: centres start
farthest-first from the most abnormal patch (the same image always gets the same score), then a fixed
number of Lloyd steps refine them (eagerly, only until the assignment stops changing). Empty clusters
keep their centre and are left out of the average, as a clustering that finds fewer groups than asked
would report them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

TOP_PATCHES = 100
CLUSTERS = 20
# Lloyd steps: ~400 unit vectors in 20 clusters settle in far fewer (tests check the assignment is stable).
KMEANS_STEPS = 30
CENTRE_WEIGHT = 0.2  # the global embedding gets the rest


def fused_embedding(patch_tokens: list[torch.Tensor], abnormal_probability: torch.Tensor,
                    global_embedding: torch.Tensor) -> torch.Tensor:
    """Normalised tokens per layer (B, N, D), patch abnormal probabilities (B, N), global (B, D) -> (B, D)."""
    top = abnormal_probability.topk(min(abnormal_probability.shape[1], TOP_PATCHES), dim=1).indices
    picked = [tokens.gather(1, top.unsqueeze(-1).expand(-1, -1, tokens.shape[-1])) for tokens in patch_tokens]
    members = torch.cat(picked, dim=1).float()  # (B, layers * k), the most abnormal patch first in each layer
    labels = kmeans_labels(members, min(CLUSTERS, members.shape[1]))
    centre = F.normalize(mean_of_cluster_means(members, labels, min(CLUSTERS, members.shape[1])), dim=-1)
    return F.normalize(CENTRE_WEIGHT * centre + (1 - CENTRE_WEIGHT) * global_embedding.float(), dim=-1)


def kmeans_labels(points: torch.Tensor, clusters: int, steps: int = KMEANS_STEPS) -> torch.Tensor:
    """Cluster index (B, M) of each of B sets of M points (B, M, D): farthest-first start, then Lloyd steps."""
    centres = farthest_first(points, clusters)
    labels = _nearest_centre(points, centres)
    for _ in range(steps):
        sums, counts = _cluster_sums(points, labels, clusters)
        centres = torch.where(counts > 0, sums / counts.clamp(min=1), centres)
        previous, labels = labels, _nearest_centre(points, centres)
        # Unchanged labels are a fixed point: further steps change nothing. A traced graph keeps every step.
        if not torch.jit.is_tracing() and torch.equal(labels, previous):
            break
    return labels


def farthest_first(points: torch.Tensor, clusters: int) -> torch.Tensor:
    """`clusters` starting centres (B, K, D): the first point, then each time the point farthest from all chosen."""
    rows = torch.arange(points.shape[0], device=points.device)
    squared_norms = (points * points).sum(-1)  # (B, M)
    centres = [points[:, 0]]
    nearest = _squared_distances(points, squared_norms, centres[0])
    for _ in range(clusters - 1):
        centres.append(points[rows, nearest.argmax(dim=1)])
        nearest = torch.minimum(nearest, _squared_distances(points, squared_norms, centres[-1]))
    return torch.stack(centres, dim=1)


def _squared_distances(points: torch.Tensor, squared_norms: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """|p - c|^2 of every point (B, M) to one centre per set (B, D), without a (B, M, D) difference tensor."""
    return squared_norms - 2 * (points @ centre.unsqueeze(-1)).squeeze(-1) + (centre * centre).sum(-1, keepdim=True)


def mean_of_cluster_means(points: torch.Tensor, labels: torch.Tensor, clusters: int) -> torch.Tensor:
    """The average over the non-empty clusters of each cluster's mean point: (B, M, D), (B, M) -> (B, D)."""
    sums, counts = _cluster_sums(points, labels, clusters)
    occupied = (counts > 0).to(points.dtype)
    return (sums / counts.clamp(min=1) * occupied).sum(dim=1) / occupied.sum(dim=1)


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

