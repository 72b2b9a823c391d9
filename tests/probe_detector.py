"""What test stand-ins for the predictor share: the two-step batch interface `infer_volume` calls."""

from __future__ import annotations

import numpy as np
from medclip_ad.inference.predictor import Prediction


class PreparedFromPredict:
    """A probe defines `predict(images)`; this gives it `prepare` and `predict_prepared` on top of it."""

    def prepare(self, images: list[np.ndarray]) -> list[np.ndarray]:
        return list(images)

    def predict_prepared(self, images: list[np.ndarray]) -> Prediction:
        return self.predict(images)
