"""Anomaly-detection methods, one folder each (detector, checkpoint, training, defaults); `registry` lists them."""

# What a detector runs when nothing names a method: the published one, and the one that needs no checkpoint.
DEFAULT_METHOD = "anomalyclip"
CHECKPOINT_FREE_METHOD = "ensemble"
