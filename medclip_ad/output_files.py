"""Names of the files the commands write, stated once.

Light on purpose (no imports): the command line's help names these files without loading the model.
"""

# `medclip-ad infer`: written last into each case folder, so a folder holding it is complete
SCORES_FILE = "scores.json"

# `medclip-ad evaluate`
RESULTS_FILE = "results.json"
REPORT_FILE = "results.md"
COMPARISON_MARKDOWN = "comparison.md"

# `medclip-ad export`: one file per deployment format, and the manifest beside them
EXPORT_FILE_NAMES: dict[str, str] = {"torchscript": "detector.torchscript.pt", "onnx": "detector.onnx"}
EXPORT_MANIFEST_FILE = "export.json"

# `medclip-ad infer` and the bundle: tracebacks of unexpected case failures, appended per run
ERROR_LOG_FILE = "errors.log"
