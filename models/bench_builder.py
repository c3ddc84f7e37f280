"""Builds the bench models (issue 8) into a bench repository in a work folder, never into models/.

    python models/bench_builder.py DEST [--models mlp_small mlp_large] [--force] [--resnet50]

    mlp_small  64 -> 128 -> ReLU -> 10 -> softmax                          (serving-overhead bound)
    mlp_large  512 -> 2048 -> ReLU -> 2048 -> ReLU -> 1000 -> softmax      (compute bound)

Weights come from torch seeded with SEED; each model is exported to ONNX (input ``input`` FP32
[-1, D], output ``output`` FP32 [-1, K]) and checked against eager torch at batch sizes 1 and 3.
Each model is written twice, with the same file and two configs: ``NAME`` (dynamic batching, delay
500 us) and ``NAME_nobatch`` (no dynamic_batching); both max_batch_size 64, one CPU instance,
cpu_threads "1". ``DEST/.bench-stamp`` records a digest of this file and the torch version; a model
whose digest matches is not rebuilt. It needs torch and onnx, nothing of the server.

``--resnet50`` also writes ``resnet50`` (models/resnet50.py, seeded) as TorchScript only, with a GPU
config (fp16, CUDA graphs, max_batch_size 128, two instances): what scripts/gpu_check.sh serves on a
device machine, whose image has torch but no ONNX exporter.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

SEED = 0
INPUT_NAME = "input"
OUTPUT_NAME = "output"
OPSET = 17
STAMP = ".bench-stamp"
LAYERS: dict[str, tuple[int, ...]] = {"mlp_small": (64, 128, 10), "mlp_large": (512, 2048, 2048, 1000)}
CONFIG = """name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: 64
input [ {{ name: "{input}" data_type: TYPE_FP32 dims: [ {width} ] }} ]
output [ {{ name: "{output}" data_type: TYPE_FP32 dims: [ {classes} ] }} ]
{batching}instance_group [ {{ count: 1 kind: KIND_CPU }} ]
parameters {{ key: "cpu_threads" value: {{ string_value: "1" }} }}
"""
BATCHING = "dynamic_batching { max_queue_delay_microseconds: 500 }\n"


def seeded_mlp(name: str) -> nn.Module:
    """The model `name`: Linear/ReLU layers of LAYERS[name], then softmax, weights from SEED."""
    torch.manual_seed(SEED)
    widths = LAYERS[name]
    layers: list[nn.Module] = []
    for index, (width_in, width_out) in enumerate(zip(widths, widths[1:], strict=False)):
        if index:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(width_in, width_out))
    layers.append(nn.Softmax(dim=1))
    return nn.Sequential(*layers).eval()


def export(model: nn.Module, width: int, path: Path) -> None:
    """ONNX with a dynamic batch dimension (torch's TorchScript exporter: fast, and enough here)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(2, width),),
            str(path),
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=OPSET,
        )


def check(model: nn.Module, width: int, path: Path) -> None:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        rows = torch.from_numpy(np.random.default_rng(batch).standard_normal((batch, width), np.float32))
        with torch.inference_mode():
            expected = model(rows).numpy()
        actual = session.run([OUTPUT_NAME], {INPUT_NAME: rows.numpy()})[0]
        if not np.allclose(actual, expected, rtol=1e-4, atol=1e-6):
            raise RuntimeError(f"{path}: batch {batch} differs from eager torch")


def write_configs(dest: Path, name: str) -> None:
    widths = LAYERS[name]
    source = dest / name / "1" / "model.onnx"
    for variant, batching in ((name, BATCHING), (f"{name}_nobatch", "")):
        folder = dest / variant
        folder.mkdir(parents=True, exist_ok=True)
        text = CONFIG.format(
            name=variant,
            input=INPUT_NAME,
            output=OUTPUT_NAME,
            width=widths[0],
            classes=widths[-1],
            batching=batching,
        )
        (folder / "config.pbtxt").write_text(text)
        if variant != name:
            copy = folder / "1" / "model.onnx"
            copy.parent.mkdir(exist_ok=True)
            copy.write_bytes(source.read_bytes())


def digest() -> str:
    content = Path(__file__).read_bytes() + torch.__version__.encode()
    return hashlib.sha256(content).hexdigest()[:16]


def build(dest: Path, names: Sequence[str], force: bool = False) -> list[str]:
    """Build `names` into `dest` (skipping those already built by this builder); one line each."""
    unknown = sorted(set(names) - set(LAYERS))
    if unknown:
        raise SystemExit(f"unknown bench model(s) {unknown}; known: {sorted(LAYERS)}")
    dest.mkdir(parents=True, exist_ok=True)
    stamp_path = dest / STAMP
    stamps: dict[str, str] = json.loads(stamp_path.read_text()) if stamp_path.is_file() else {}
    lines = []
    for name in names:
        path = dest / name / "1" / "model.onnx"
        if not force and stamps.get(name) == digest() and path.is_file():
            lines.append(f"{name}: up to date")
            continue
        model = seeded_mlp(name)
        export(model, LAYERS[name][0], path)
        check(model, LAYERS[name][0], path)
        write_configs(dest, name)
        stamps[name] = digest()
        stamp_path.write_text(json.dumps(stamps, indent=1, sort_keys=True))
        lines.append(f"{name}: built {path} ({path.stat().st_size / 1e6:.1f} MB), matches eager torch")
    return lines


RESNET50_CONFIG = """name: "resnet50"
max_batch_size: 128
input [ { name: "images" data_type: TYPE_UINT8 dims: [ 3, 224, 224 ] } ]
output [ { name: "logits" data_type: TYPE_FP32 dims: [ 1000 ] } ]
dynamic_batching { max_queue_delay_microseconds: 1000 default_queue_policy { max_queue_size: 4096 } }
instance_group [ { count: 2 kind: KIND_AUTO } ]
parameters { key: "precision" value: { string_value: "fp16" } }
parameters { key: "cuda_graphs" value: { string_value: "true" } }
"""


def build_resnet50(dest: Path) -> str:
    """resnet50/1/model.pt (TorchScript, seeded weights) and its GPU config, unless already there."""
    from resnet50 import seeded_resnet50  # models/resnet50.py: this script's folder is on sys.path

    folder = dest / "resnet50"
    path = folder / "1" / "model.pt"
    (folder / "1").mkdir(parents=True, exist_ok=True)
    (folder / "config.pbtxt").write_text(RESNET50_CONFIG)
    if path.is_file():
        return f"resnet50: up to date ({path})"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(seeded_resnet50(seed=SEED)), str(path))
    return f"resnet50: built {path} ({path.stat().st_size / 1e6:.0f} MB, TorchScript)"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="models/bench_builder.py", description=__doc__.split("\n")[0])
    parser.add_argument("dest", type=Path)
    parser.add_argument("--models", nargs="*", default=sorted(LAYERS), choices=sorted(LAYERS))
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--resnet50", action="store_true", help="also resnet50 (TorchScript, GPU config)")
    args = parser.parse_args(argv)
    for line in build(args.dest, args.models, args.force):
        print(line, flush=True)
    if args.resnet50:
        print(build_resnet50(args.dest), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
