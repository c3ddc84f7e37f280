"""Builds the example model repository's binaries, reproducibly and only when their sources change.

    serving models build --model-repository models      (the CLI loads this file and calls build())
    python models/build.py [--force] [--only NAME ...] [REPOSITORY]

Builders of served models write into `<repository>/<model>/`; the digits rollout candidates go to
`<repository>/candidates/digits/{good,slow,wrong}/` (no config.pbtxt there, so never served).

Each model's committed ``config.pbtxt`` must already exist and is never written here. A builder
writes its outputs into a staging folder inside the model's folder; the files are then moved into
place one by one (an atomic rename each, model files last) and ``<repository>/.build-stamp`` (JSON,
model name -> digest) records the sha256 of each builder's source files and library versions. A model
whose digest matches and whose outputs all exist is skipped.

This folder is not a Python package: builders are imported by module name from this file's folder.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
STAMP_NAME = ".build-stamp"
LIBRARIES = ("numpy", "torch", "onnx", "onnxruntime", "onnxscript", "scikit-learn", "skl2onnx")


@dataclass(frozen=True)
class ModelBuilder:
    """How to build one model: ``module.function(model_dir) -> summary`` writes ``outputs``."""

    name: str
    module: str
    function: str
    sources: tuple[str, ...]  # files in this folder whose content defines the outputs
    outputs: tuple[str, ...]  # paths relative to the model folder, in the order they are published
    folder: str = ""  # where the outputs go, relative to the repository; "" = the model folder, ``name``
    served: bool = True  # False: not a model the repository serves (no config.pbtxt), e.g. candidates

    @property
    def directory(self) -> str:
        return self.folder or self.name


BUILDERS: tuple[ModelBuilder, ...] = (
    ModelBuilder(
        name="digits",
        module="digits_builder",
        function="build_digits",
        sources=("digits_builder.py",),
        outputs=(
            "test_set.npz",
            "1/accuracy.json",
            "1/reference.json",
            "1/model.onnx",
            "2/accuracy.json",
            "2/reference.json",
            "2/model.pt",
        ),
    ),
    ModelBuilder(
        name="resnet50",
        module="resnet50_builder",
        function="build_resnet50",
        sources=("resnet50.py", "resnet50_builder.py"),
        outputs=("1/model.onnx", "2/model.pt"),
    ),
    ModelBuilder(
        name="digits-candidates",
        module="digits_candidates",
        function="build_digits_candidates",
        sources=("digits_builder.py", "digits_candidates.py"),
        outputs=tuple(
            f"{candidate}/{output}"
            for candidate in ("good", "slow", "wrong")
            for output in ("accuracy.json", "reference.json", "candidate.json", "model.pt")
        ),
        folder="candidates/digits",  # no config.pbtxt there: never served (docs/rollout.md)
        served=False,
    ),
)


@dataclass(frozen=True)
class BuildReport:
    name: str
    built: bool
    seconds: float
    summary: str

    def line(self) -> str:
        state = "built" if self.built else "up to date"
        detail = f": {self.summary}" if self.summary else ""
        return f"{self.name:<10} {state} in {self.seconds:.1f}s{detail}"


def library_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


def source_digest(builder: ModelBuilder) -> str:
    """sha256 over the builder's source files and the versions of the libraries that shape outputs."""
    digest = hashlib.sha256()
    for source in builder.sources:
        digest.update(source.encode() + b"\0" + (HERE / source).read_bytes() + b"\0")
    for library in LIBRARIES:
        digest.update(f"{library}=={library_version(library)}\0".encode())
    return digest.hexdigest()


def read_stamps(repository: Path) -> dict[str, str]:
    """Digests of the models last built in ``repository``; empty when absent or unreadable."""
    try:
        stamps = json.loads((repository / STAMP_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return {str(name): str(digest) for name, digest in stamps.items()} if isinstance(stamps, dict) else {}


def write_stamp(repository: Path, name: str, digest: str | None) -> None:
    """Record (or, with None, forget) one model's digest; atomic write, then rename."""
    stamps = read_stamps(repository)
    stamps.pop(name, None)
    if digest is not None:
        stamps[name] = digest
    temporary = repository / (STAMP_NAME + ".tmp")
    temporary.write_text(json.dumps(stamps, indent=2, sort_keys=True) + "\n")
    os.replace(temporary, repository / STAMP_NAME)


def is_up_to_date(repository: Path, builder: ModelBuilder, digest: str) -> bool:
    if read_stamps(repository).get(builder.name) != digest:
        return False
    return all((repository / builder.directory / output).is_file() for output in builder.outputs)


def load_build_function(builder: ModelBuilder) -> Callable[[Path], str]:
    """Import the builder lazily (torch and scikit-learn take seconds to import)."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    function: Callable[[Path], str] = getattr(importlib.import_module(builder.module), builder.function)
    return function


def publish(staging: Path, model_dir: Path, outputs: Sequence[str]) -> None:
    """Move each staged output into place with an atomic rename; fail if one is missing."""
    missing = [output for output in outputs if not (staging / output).is_file()]
    if missing:
        raise RuntimeError(f"{model_dir.name}: builder did not write {missing}")
    for output in outputs:
        target = model_dir / output
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / output, target)


def build_model(repository: Path, builder: ModelBuilder, force: bool) -> BuildReport:
    started = time.monotonic()
    model_dir = repository / builder.directory
    if builder.served and not (model_dir / "config.pbtxt").is_file():
        raise FileNotFoundError(f"{model_dir / 'config.pbtxt'} is missing: it is committed, not built")
    digest = source_digest(builder)
    if not force and is_up_to_date(repository, builder, digest):
        return BuildReport(builder.name, False, time.monotonic() - started, "")
    build_function = load_build_function(builder)
    write_stamp(repository, builder.name, None)
    model_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".staging-", dir=model_dir) as staging:
        summary = build_function(Path(staging))
        publish(Path(staging), model_dir, builder.outputs)
    write_stamp(repository, builder.name, digest)
    return BuildReport(builder.name, True, time.monotonic() - started, summary)


def select_builders(only: Sequence[str] | None) -> list[ModelBuilder]:
    if only is None:
        return list(BUILDERS)
    known = {builder.name: builder for builder in BUILDERS}
    unknown = sorted(set(only) - set(known))
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; known: {sorted(known)}")
    return [builder for builder in BUILDERS if builder.name in only]


def build_models(
    repository: Path, force: bool = False, only: Sequence[str] | None = None
) -> Iterator[BuildReport]:
    """Build (or skip) each selected model in ``repository``, yielding a report as each finishes."""
    for builder in select_builders(only):
        yield build_model(Path(repository), builder, force)


def build(repository: Path, force: bool = False, only: Sequence[str] | None = None) -> None:
    """Entry point for ``serving models build``: print one line per model."""
    started = time.monotonic()
    for report in build_models(repository, force, only):
        print(report.line(), flush=True)
    print(f"{'total':<10} {time.monotonic() - started:.1f}s", flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build the example model repository's binaries.")
    parser.add_argument("repository", nargs="?", type=Path, default=HERE, help="default: this folder")
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="build only these models")
    args = parser.parse_args(argv)
    build(args.repository, force=args.force, only=args.only)


if __name__ == "__main__":
    main()
