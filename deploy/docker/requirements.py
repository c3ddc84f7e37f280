"""The container image's pip requirements, read from pyproject.toml: the one place versions are pinned.

    python3 deploy/docker/requirements.py cpu|gpu [--pyproject pyproject.toml] > requirements.txt

cpu: the [project] dependencies as they are.
gpu: the same, where the `gpu` extra has a `NAME-gpu` build of a dependency NAME it takes NAME's place
     (onnxruntime -> onnxruntime-gpu); the rest of the extra (the CUDA libraries) is added.
Standard library only: it runs in the image's build stage before anything is installed.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
VARIANTS = ("cpu", "gpu")


def package_name(requirement: str) -> str:
    """The normalised distribution name of a requirement line (PEP 503: lower case, runs of -_. as -)."""
    match = NAME.match(requirement.strip())
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def image_requirements(pyproject: dict[str, object], variant: str) -> list[str]:
    project = pyproject["project"]
    assert isinstance(project, dict)
    base: list[str] = list(project["dependencies"])
    if variant == "cpu":
        return base
    if variant != "gpu":
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    gpu: list[str] = list(project["optional-dependencies"]["gpu"])
    gpu_names = {package_name(line): line for line in gpu}
    swapped = [gpu_names.get(package_name(line) + "-gpu", line) for line in base]
    return swapped + [line for line in gpu if line not in swapped]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variant", choices=VARIANTS)
    parser.add_argument("--pyproject", type=Path, default=Path("pyproject.toml"))
    args = parser.parse_args(argv)
    with args.pyproject.open("rb") as file:
        pyproject = tomllib.load(file)
    sys.stdout.write("".join(line + "\n" for line in image_requirements(pyproject, args.variant)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
