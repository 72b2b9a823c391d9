"""AdaCLIP's hybrid semantic fusion: an image embedding that carries the most anomalous patches.

A global embedding alone misses small anomalies; the patches the map finds most abnormal, grouped by
KMeans into semantic clusters, add what they look like.

The clustering is plain tensor code, batched over images, so it runs on the GPU beside the model and
survives TorchScript/ONNX export. It is deterministic where the reference is unseeded: centres start
farthest-first from the most abnormal patch (the same image always gets the same score), then a fixed
number of Lloyd steps refine them. Empty clusters keep their centre and are left out of the average,
as a clustering that finds fewer groups than asked would report them.
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
    for _ in range(steps):
        membership = _one_hot(_nearest_centre(points, centres), clusters)  # (B, M, K)
        counts = membership.sum(dim=1).unsqueeze(-1)  # (B, K, 1)
        centres = torch.where(counts > 0, (membership.transpose(1, 2) @ points) / counts.clamp(min=1), centres)
    return _nearest_centre(points, centres)


def farthest_first(points: torch.Tensor, clusters: int) -> torch.Tensor:
    """`clusters` starting centres (B, K, D): the first point, then each time the point farthest from all chosen."""
    rows = torch.arange(points.shape[0], device=points.device)
    centres = [points[:, 0]]
    nearest = (points - centres[0].unsqueeze(1)).norm(dim=-1)
    for _ in range(clusters - 1):
        centres.append(points[rows, nearest.argmax(dim=1)])
        nearest = torch.minimum(nearest, (points - centres[-1].unsqueeze(1)).norm(dim=-1))
    return torch.stack(centres, dim=1)


def mean_of_cluster_means(points: torch.Tensor, labels: torch.Tensor, clusters: int) -> torch.Tensor:
    """The average over the non-empty clusters of each cluster's mean point: (B, M, D), (B, M) -> (B, D)."""
    membership = _one_hot(labels, clusters)
    counts = membership.sum(dim=1)  # (B, K)
    means = (membership.transpose(1, 2) @ points) / counts.clamp(min=1).unsqueeze(-1)
    occupied = (counts > 0).to(points.dtype)
    return (means * occupied.unsqueeze(-1)).sum(dim=1) / occupied.sum(dim=1, keepdim=True)


def _nearest_centre(points: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Index of each point's nearest centre, by squared distance written out (exports to every runtime)."""
    squared = (points * points).sum(-1, keepdim=True) - 2 * points @ centres.transpose(1, 2) \
        + (centres * centres).sum(-1).unsqueeze(1)
    return squared.argmin(dim=-1)


def _one_hot(labels: torch.Tensor, clusters: int) -> torch.Tensor:
    return (labels.unsqueeze(-1) == torch.arange(clusters, device=labels.device)).float()
