"""`python -m medclip_ad.deploy -i STUDY_DIR -o OUTPUT_DIR -m MODEL_DIR`: run the MONAI Deploy application.

Exit status as `medclip-ad infer`'s: 1 when some series failed and others were written, 2 when nothing
could be written (bad settings, or every series failed); each failure is named on stderr.
"""

import sys

from medclip_ad.deploy.app import AnomalyDetectionApp
from medclip_ad.deploy.operators import SeriesFailed
from medclip_ad.errors import PARTIAL_FAILURE_EXIT, USER_ERROR_EXIT, UserInputError


def main() -> int:
    try:
        AnomalyDetectionApp().run()
    except UserInputError as error:
        print(f"medclip-ad deploy: {error}", file=sys.stderr)
        return PARTIAL_FAILURE_EXIT if isinstance(error, SeriesFailed) and error.written else USER_ERROR_EXIT
    return 0


if __name__ == "__main__":
    sys.exit(main())
