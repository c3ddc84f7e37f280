"""Tiny TorchScript models with TYPE_STRING tensors (Triton libtorch's convention: list[str] in and out)."""

from __future__ import annotations

from pathlib import Path

import torch

SUFFIX = "✓\x00"  # non-ASCII and a NUL: the model's mark on every string it returns


class AppendSuffix(torch.nn.Module):
    """x: list[str] → [s + SUFFIX for s in x]."""

    def forward(self, x: list[str]) -> list[str]:
        return [s + "✓\x00" for s in x]


class SuffixAndLength(torch.nn.Module):
    """(x: list[str], scale) → (x with SUFFIX, len(s) * scale as a column). TorchScript counts a str's
    length in UTF-8 bytes, so the lengths show what bytes reached the model."""

    def forward(self, x: list[str], scale: torch.Tensor) -> tuple[list[str], torch.Tensor]:
        lengths = torch.tensor([len(s) for s in x], dtype=torch.float32)
        return [s + "✓\x00" for s in x], lengths.reshape(-1, 1) * scale


class ReturnsTensor(torch.nn.Module):
    """Declared TYPE_STRING output, but returns a tensor: a model bug the server must report."""

    def forward(self, x: list[str]) -> torch.Tensor:
        return torch.zeros(len(x))


def write_scripted(module: torch.nn.Module, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(torch.jit.script(module), str(path))  # type: ignore[no-untyped-call]
    return path


TORCH_STRINGS_CONFIG = """
name: "torch_strings"
platform: "pytorch_libtorch"
max_batch_size: 8
input [ { name: "x" data_type: TYPE_STRING dims: [ 2 ] } ]
output [ { name: "y" data_type: TYPE_STRING dims: [ 2 ] } ]
dynamic_batching { max_queue_delay_microseconds: 50000 }
"""
