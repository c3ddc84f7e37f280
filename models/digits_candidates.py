"""Builds three rollout candidates for ``digits`` (each a TorchScript version folder, like version 2).

    good   the version-2 MLP trained with another seed: as accurate, agrees with v2 on ~98% of images
    slow   version 2's weights (seed 0, same predictions) plus a fixed burn of CPU work per batch
    wrong  version 2's weights with its classes permuted (c -> c+1 mod 10): confident and wrong

They are written to ``<repository>/candidates/digits/<name>/`` (model.pt, accuracy.json,
reference.json, candidate.json). That folder has no config.pbtxt, so the server never serves it:
an operator (or a test) copies one into a live repository as the next version,
``cp -r models/candidates/digits/good models/digits/3``, and rolls it out (docs/rollout.md).
"""

import time
from pathlib import Path

import numpy as np
import torch
from digits_builder import (
    MIN_ACCURACY,
    N_CLASSES,
    DigitsMLP,
    DigitsSplit,
    Floats,
    load_split,
    predict_torchscript,
    reference_distribution,
    train_torch,
    write_json,
)
from torch import Tensor, nn

GOOD_SEED = 1
BURN_WIDTH = 128  # the slow candidate multiplies a 128x128 matrix ...
BURN_ROUNDS = 96  # ... this many times per batch: ~400 MFLOP, a few ms on one CPU core
SHIFT = 1  # the wrong candidate answers class (c + SHIFT) % 10 where version 2 answers c


class SlowDigits(nn.Module):
    """A DigitsMLP that also burns a fixed amount of CPU per call (per batch, whatever its size).

    TorchScript has no sleep; the burn is a chain of matrix products whose result is folded into the
    output with weight zero, so that no optimiser can drop it and the probabilities stay exact.
    """

    burn: Tensor

    def __init__(self, inner: DigitsMLP, width: int = BURN_WIDTH, rounds: int = BURN_ROUNDS) -> None:
        super().__init__()
        self.inner = inner
        generator = torch.Generator().manual_seed(0)
        orthogonal, _ = torch.linalg.qr(torch.randn(width, width, generator=generator))
        self.register_buffer("burn", orthogonal)
        self.rounds = rounds

    def forward(self, x: Tensor) -> Tensor:
        state = self.burn
        for _ in range(self.rounds):
            state = torch.tanh(state @ self.burn)  # bounded: tanh keeps every entry in (-1, 1)
        probabilities: Tensor = self.inner(x)
        return probabilities + 0.0 * state.sum()


class PermutedDigits(nn.Module):
    """A DigitsMLP whose output columns are rotated: the probability of class c is reported for c+shift."""

    order: Tensor

    def __init__(self, inner: DigitsMLP, shift: int = SHIFT) -> None:
        super().__init__()
        self.inner = inner
        self.register_buffer("order", torch.roll(torch.arange(N_CLASSES), shift))

    def forward(self, x: Tensor) -> Tensor:
        probabilities: Tensor = self.inner(x)
        return probabilities.index_select(1, self.order)


def burn_milliseconds(path: Path, repeats: int = 20) -> float:
    """Median wall time of one single-row call on one thread: what the burn costs on this machine."""
    module = torch.jit.load(str(path), map_location="cpu").eval()  # type: ignore[no-untyped-call]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        row = torch.zeros(1, 64)
        times = []
        with torch.inference_mode():
            for _ in range(repeats + 3):
                started = time.perf_counter()
                module(row)
                times.append(time.perf_counter() - started)
    finally:
        torch.set_num_threads(threads)
    return float(np.median(times[3:])) * 1000.0


def save_candidate(
    folder: Path, module: nn.Module, split: DigitsSplit, description: dict[str, object]
) -> Floats:
    """Script and save ``module``; write accuracy.json, reference.json and candidate.json beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.pt"
    torch.jit.save(torch.jit.script(module.eval()), str(path))
    probabilities = predict_torchscript(path, split.x_test)
    if probabilities.shape != (len(split.y_test), N_CLASSES) or probabilities.dtype != np.float32:
        raise RuntimeError(f"{folder}: bad output {probabilities.dtype} {probabilities.shape}")
    accuracy = float((probabilities.argmax(axis=1) == split.y_test).mean())
    write_json(
        folder / "accuracy.json",
        {"accuracy": accuracy, "n_test": int(len(split.y_test)), "framework": "torchscript"},
    )
    write_json(folder / "reference.json", reference_distribution(probabilities))
    write_json(folder / "candidate.json", {**description, "accuracy": accuracy})
    return probabilities


def agreement(a: Floats, b: Floats) -> float:
    return float((a.argmax(axis=1) == b.argmax(axis=1)).mean())


def build_digits_candidates(folder: Path) -> str:
    """Write good/, slow/ and wrong/ under ``folder``; return a summary line."""
    split = load_split()
    baseline = train_torch(split)  # the same training as version 2
    version2 = baseline(torch.from_numpy(split.x_test)).detach().numpy()
    good = save_candidate(
        folder / "good",
        train_torch(split, seed=GOOD_SEED),
        split,
        {"candidate": "good", "expect": "promoted", "change": f"version 2's MLP, seed {GOOD_SEED}"},
    )
    slow = save_candidate(
        folder / "slow",
        SlowDigits(baseline),
        split,
        {
            "candidate": "slow",
            "expect": "rolled back on latency",
            "change": "burns CPU per batch",
            "burn": f"{BURN_ROUNDS} products of {BURN_WIDTH}x{BURN_WIDTH} matrices",
        },  # fmt: skip
    )
    wrong = save_candidate(
        folder / "wrong",
        PermutedDigits(baseline),
        split,
        {
            "candidate": "wrong",
            "expect": "rolled back on drift/agreement",
            "change": f"class c reported as (c + {SHIFT}) mod {N_CLASSES}",
        },  # fmt: skip
    )
    checks = {"good": agreement(good, version2), "slow": agreement(slow, version2)}
    low = {name: value for name, value in checks.items() if value < MIN_ACCURACY}
    if low or agreement(wrong, version2) > 0.05:
        raise RuntimeError(f"candidates do not differ from version 2 as intended: {checks}, {low}")
    burn_ms = burn_milliseconds(folder / "slow" / "model.pt")
    return (
        f"agreement with v2: good {checks['good']:.3f}, slow {checks['slow']:.3f},"
        f" wrong {agreement(wrong, version2):.3f}; slow burns {burn_ms:.1f} ms per batch here"
    )
