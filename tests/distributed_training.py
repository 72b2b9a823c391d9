"""Run several `medclip-ad train` command lines in one torchrun job (one process group, joined once).

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/distributed_training.py RUNS.json

RUNS.json holds a list of argument lists; every rank runs each of them in order.
"""

from __future__ import annotations

import json
import sys

from medclip_ad.cli.main import main
from medclip_ad.training import distributed

if __name__ == "__main__":
    with open(sys.argv[1]) as handle:
        runs = json.load(handle)
    distributed.start("cpu")
    codes = [main(argv) for argv in runs]
    distributed.stop()
    sys.exit(max(codes))
