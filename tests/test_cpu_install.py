"""The documented CPU-only install stays true: PyTorch's CPU builds of the pinned pair satisfy the ranges and the
constraints (so pip keeps them and pulls no CUDA wheel), and the README and the Dockerfile's cpu target name
exactly the pinned versions. (The install itself needs PyTorch's CPU index, which this machine cannot reach.)"""

from __future__ import annotations

import re
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from conftest import REPO_ROOT

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
CPU_PAIR = ("torch", "torchvision")


def _pins() -> dict[str, str]:
    lines = (REPO_ROOT / "constraints.txt").read_text().splitlines()
    return {name.lower(): version for name, version in (line.split("==") for line in lines
                                                         if line and not line.startswith("#"))}


def _dependencies() -> dict[str, Requirement]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    return {requirement.name.lower(): requirement for requirement in map(Requirement, project["dependencies"])}


@pytest.mark.parametrize("name", CPU_PAIR)
def test_the_cpu_build_of_the_pinned_version_satisfies_range_and_constraint(name):
    pinned = _pins()[name]
    cpu_build = Version(f"{pinned}+cpu")
    assert _dependencies()[name].specifier.contains(cpu_build)
    assert Requirement(f"{name}=={pinned}").specifier.contains(cpu_build)  # what `-c constraints.txt` asks


def test_readme_and_dockerfile_install_the_pinned_pair_from_the_cpu_index():
    pins = _pins()
    command = f"pip install torch=={pins['torch']} torchvision=={pins['torchvision']} --index-url {CPU_INDEX}"
    assert command in (REPO_ROOT / "README.md").read_text()
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    cpu_stage = dockerfile[dockerfile.index("AS cpu"):dockerfile.index("AS cuda")]
    assert f"RUN {command}" in cpu_stage and "-c constraints.txt" in cpu_stage


def test_no_runtime_dependency_needs_cuda_by_itself():
    """CUDA wheels reach an install only through torch's own CUDA build: nothing else asks for them."""
    cuda = re.compile(r"^(nvidia-|cuda-|cupy|triton|holoscan)")
    assert [name for name in _dependencies() if cuda.match(name)] == []
