"""medclip-ad as a MONAI Deploy application: a DICOM study in, PACS-ready DICOM findings out.

    python -m medclip_ad.deploy -i STUDY_DIR -o OUTPUT_DIR -m MODEL_DIR

The graph: the SDK's DICOMDataLoaderOperator reads the study folder, its DICOMSeriesSelectorOperator picks
the series to score (CT, MR and PET image series unless `series_rules.json` says otherwise), and this
package's operators read each series as `infer` does, score it and write its case folder with the DICOM
outputs (`medclip_ad.deploy.operators`). The model folder holds the detector and its settings
(`medclip_ad.deploy.settings`); `app.yaml` beside this file describes the application package (MAP).
Inputs, outputs and model folder also come from HOLOSCAN_INPUT_PATH, HOLOSCAN_OUTPUT_PATH and
HOLOSCAN_MODEL_PATH, as in every MONAI Deploy application.
"""

from __future__ import annotations

import json
from pathlib import Path

from monai.deploy.conditions import CountCondition
from monai.deploy.core import Application
from monai.deploy.operators import DICOMDataLoaderOperator, DICOMSeriesSelectorOperator

from medclip_ad import __version__
from medclip_ad.deploy.operators import (
    SCANS,
    SCORED,
    SELECTED_SERIES,
    AnomalyScoringOperator,
    DicomOutputsOperator,
    SeriesToScanOperator,
)
from medclip_ad.deploy.settings import load_settings

STUDIES = "dicom_study_list"


class AnomalyDetectionApp(Application):
    """Zero-shot anomaly detection (AnomalyCLIP) on every selected series of a DICOM study."""

    name = "medclip-ad"
    description = "Zero-shot anomaly detection (AnomalyCLIP): DICOM series in, Parametric Map, overlays, SR out"
    version = __version__

    def compose(self) -> None:
        context = Application.init_app_context(self.argv)
        input_folder, output_folder = Path(context.input_path), Path(context.output_path)
        settings = load_settings(Path(context.model_path))
        loader = DICOMDataLoaderOperator(self, CountCondition(self, 1), input_folder=input_folder, name="dicom_loader")
        selector = DICOMSeriesSelectorOperator(self, rules=json.dumps(settings.series_rules), all_matched=True,
                                               name="series_selector")
        to_scan = SeriesToScanOperator(self, input_folder=input_folder, name="series_to_scan")
        scoring = AnomalyScoringOperator(self, detector=settings.detector, options=settings.options,
                                         name="anomaly_scoring")
        writer = DicomOutputsOperator(self, output_folder=output_folder, options=settings.options,
                                      name="dicom_outputs")
        self.add_flow(loader, selector, {(STUDIES, STUDIES)})
        self.add_flow(selector, to_scan, {(SELECTED_SERIES, SELECTED_SERIES)})
        self.add_flow(to_scan, scoring, {(SCANS, SCANS)})
        self.add_flow(scoring, writer, {(SCORED, SCORED)})
