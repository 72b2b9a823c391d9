"""AdaCLIP's hybrid semantic fusion: an image embedding that carries the most anomalous patches.

A global embedding alone misses small anomalies; the patches the map finds most abnormal, grouped by
KMeans into semantic clusters, add what they look like. The clustering is seeded, so the same image
always gets the same score (the reference leaves it unseeded).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans

TOP_PATCHES = 100
CLUSTERS = 20
KMEANS_SEED = 111
KMEANS_INITS = 1  # sklearn's own choice for k-means++ seeding
CENTRE_WEIGHT = 0.2  # the global embedding gets the rest


def fused_embedding(patch_tokens: list[torch.Tensor], abnormal_probability: torch.Tensor,
                    global_embedding: torch.Tensor) -> torch.Tensor:
    """One image: normalised tokens per layer (N, D), patch abnormal probabilities (N,), global (D,) -> (D,)."""
    top = abnormal_probability.topk(min(abnormal_probability.shape[0], TOP_PATCHES)).indices
    members = torch.cat([tokens[top] for tokens in patch_tokens]).float()
    clusters = min(CLUSTERS, members.shape[0])
    labels = KMeans(n_clusters=clusters, random_state=KMEANS_SEED, n_init=KMEANS_INITS).fit_predict(
        members.detach().cpu().double().numpy())
    labels = torch.from_numpy(labels.astype(np.int64)).to(members.device)
    means = [members[labels == cluster].mean(dim=0) for cluster in labels.unique()]
    centre = F.normalize(torch.stack(means).mean(dim=0), dim=-1)
    return F.normalize(CENTRE_WEIGHT * centre + (1 - CENTRE_WEIGHT) * global_embedding.float(), dim=-1)
