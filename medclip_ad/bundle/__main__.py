"""`python -m medclip_ad.bundle`: print the MONAI bundle's folder (as `medclip-ad bundle-path` does)."""

import sys

from medclip_ad.cli.main import main

sys.exit(main(["bundle-path", *sys.argv[1:]]))
