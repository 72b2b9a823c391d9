"""medclip-ad: zero-shot anomaly detection for medical images and volumes (AnomalyCLIP)."""

__version__ = "0.1.0"
