import sys

from medclip_ad.cli.main import main

sys.exit(main())
