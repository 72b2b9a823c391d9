"""Evaluate one detector on dataset manifests with the published protocol, and write its report.

Per class, as the reference evaluation does (spec section 7): image AUROC, AP and F1-max where both labels
occur; pixel AUROC, AUPRO (reference and standard flavours), pixel AP and F1-max where masks exist; then
the unweighted mean over classes. An undefined metric is None in Python and "n/a" in every file, never 0.

Modules, one job each: `runner` (the run: input checks, `evaluate`), `predictions` (the detector's outputs
over a dataset), `scoring` (metrics from them), `results` (the report as data), `report` (results.json,
results.md, cases.csv), `plots` (curves and example overlays), `published` (the paper's numbers).
"""

from medclip_ad.evaluation.plots import CURVES_FOLDER, EXAMPLES_FOLDER
from medclip_ad.evaluation.published import PublishedNumbers, published_anomalyclip
from medclip_ad.evaluation.report import CASES_FILE, REPORT_FILE, RESULTS_FILE
from medclip_ad.evaluation.results import (
                                           IMAGE_METRICS,
                                           METRICS,
                                           NOT_AVAILABLE,
                                           PIXEL_METRICS,
                                           CaseScore,
                                           ClassResult,
                                           DatasetResult,
                                           EvaluationReport,
                                           format_percent,
)
from medclip_ad.evaluation.runner import check_evaluation_inputs, evaluate

__all__ = ["CASES_FILE", "CURVES_FOLDER", "EXAMPLES_FOLDER", "IMAGE_METRICS", "METRICS", "NOT_AVAILABLE",
           "PIXEL_METRICS", "REPORT_FILE", "RESULTS_FILE", "CaseScore", "ClassResult", "DatasetResult",
           "EvaluationReport", "PublishedNumbers", "check_evaluation_inputs", "evaluate", "format_percent",
           "published_anomalyclip"]
