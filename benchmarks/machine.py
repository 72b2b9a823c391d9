"""The line every benchmark prints first: what it ran on, so numbers are never quoted without their machine."""

from __future__ import annotations

import os
import platform


def machine_line(device: str = "cpu") -> str:
    """`machine: <GPU name or CPU>, <cores> CPU cores, torch <version>, threads <n>`."""
    import torch

    name = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else \
        platform.processor() or platform.machine()
    return (f"machine: {name}, {os.cpu_count()} CPU cores, {platform.platform()}, torch {torch.__version__}, "
            f"threads {torch.get_num_threads()}")


def load_line() -> str:
    """`load average <1 min> <5 min> <15 min>`: other jobs on the machine, printed with every timed number."""
    return "load average " + " ".join(f"{value:.2f}" for value in os.getloadavg())
