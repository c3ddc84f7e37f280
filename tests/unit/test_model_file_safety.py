"""Model files are data: a .pt2 crafted to run code when unpickled is refused, and the code never runs.

torch.export.load unpickles weights marked `use_pickle` with weights_only=False; the torch backend forces
torch's weights-only unpickler (serving/backends/torch.py, restrict_unpickling). TorchScript (.pt) is read
by TorchScript's own restricted unpickler, ONNX is protobuf: neither runs Python from the file.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import pytest
import torch

from serving.backends.torch import load_module
from serving.errors import ModelConfigError


class Add(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.w


class Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def crafted_pt2(folder: Path, marker: Path) -> Path:
    good, bad = folder / "good.pt2", folder / "model.pt2"
    torch.export.save(torch.export.export(Add(), (torch.zeros(2),)), good)
    payload = io.BytesIO()
    torch.save({"w": Payload(marker)}, payload)
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(bad, "w") as target:
        for info in source.infolist():
            data = source.read(info.filename)
            if info.filename.endswith("weights/model_weights_config.json"):
                config = json.loads(data)
                for entry in config["config"].values():
                    entry["use_pickle"] = True
                data = json.dumps(config).encode()
            elif "/data/weights/weight_" in info.filename:
                data = payload.getvalue()
            target.writestr(info, data)
    return bad


def test_a_pt2_that_would_run_code_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", raising=False)  # restored after the test
    monkeypatch.delenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", raising=False)
    marker = tmp_path / "ran"
    model = crafted_pt2(tmp_path, marker)
    with pytest.raises(ModelConfigError, match="torch cannot load the model"):
        load_module(model, torch.device("cpu"))
    assert not marker.exists(), "the model file ran code while loading"
    good = load_module(tmp_path / "good.pt2", torch.device("cpu"))  # an honest .pt2 still loads
    assert torch.equal(good(torch.zeros(2)), torch.ones(2))
