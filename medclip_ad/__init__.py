"""medclip-ad: zero-shot anomaly detection for medical images and volumes (AnomalyCLIP).

    from medclip_ad import AnomalyPredictor, DetectorConfig, predict_scan, read_study

The names below are imported on first use, so `import medclip_ad` (and the command line) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.3.0"

# Public name -> the module that defines it.
_EXPORTS: dict[str, str] = {
    "AnomalyPredictor": "medclip_ad.inference.predictor",
    "DetectorConfig": "medclip_ad.config",
    "CaseOptions": "medclip_ad.config",
    "predict_scan": "medclip_ad.inference.case",
    "read_study": "medclip_ad.io.readers",
}
__all__ = ["AnomalyPredictor", "CaseOptions", "DetectorConfig", "__version__", "predict_scan", "read_study"]

if TYPE_CHECKING:
    from medclip_ad.config import CaseOptions, DetectorConfig
    from medclip_ad.inference.case import predict_scan
    from medclip_ad.inference.predictor import AnomalyPredictor
    from medclip_ad.io.readers import read_study


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'medclip_ad' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
