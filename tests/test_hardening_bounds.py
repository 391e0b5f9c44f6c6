"""A small checkpoint cannot force large allocations: declared sizes are checked against the weights before anything
real is built (issue 21, defect 4)."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import adapterkit
from adapterkit import AutoAdapterModel, CheckpointError
from adapterkit.errors import AdapterError

from ckpt_helpers import assert_unchanged, model_with, snapshot
from conftest import tiny_config, tiny_model


def _edit(path, **changes):
    data = json.loads(path.read_text())
    data["config"].update(changes)
    path.write_text(json.dumps(data))


_LIMIT = 20_000_000  # elements (80 MB of float32): far more than any tiny checkpoint here needs


class _AllocationGuard(TorchDispatchMode):
    """Fails the test as soon as real (not meta) tensors of more than `_LIMIT` elements in all were requested."""

    total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.ops.aten.empty.memory_format, torch.ops.aten.empty_strided.default):
            device = kwargs.get("device")
            if device is None or torch.device(device).type != "meta":
                numel = 1
                for n in args[0]:
                    numel *= int(n)
                self.total += numel
                if self.total > _LIMIT:
                    raise AssertionError(f"real tensors of {self.total} elements allocated before the error")
        return func(*args, **kwargs)


def _guarded(fn):
    with _AllocationGuard():
        fn()


@pytest.mark.parametrize("method,field,value", [
    ("lora", "r", 1_000_000), ("lora", "r", 10**8), ("seq_bn", "reduction_factor", 1e-6),
    ("prefix_tuning", "prefix_length", 10**7), ("prefix_tuning", "bottleneck_size", 10**7),
])
def test_huge_declared_sizes_fail_before_allocating(tmp_path, method, field, value):
    model = model_with("bert", method)
    model.save_adapter(tmp_path, "a")
    _edit(tmp_path / "adapter_config.json", **{field: value})
    fresh = adapterkit.init(tiny_model("bert"))
    before = snapshot(fresh)
    errors = []

    def load():
        try:
            fresh.load_adapter(tmp_path)
        except Exception as e:  # noqa: BLE001 - the type is asserted below
            errors.append(e)

    _guarded(load)
    assert errors and isinstance(errors[0], CheckpointError), errors
    assert "shape" in str(errors[0]) and str(tmp_path) in str(errors[0])
    assert_unchanged(fresh, before)


def _saved_head(tmp_path, **head_changes):
    model = AutoAdapterModel.from_config(tiny_config("bert")).eval()
    model.add_classification_head("h", num_labels=3, layers=2)
    model.save_head(tmp_path, "h")
    path = tmp_path / "head_config.json"
    data = json.loads(path.read_text())
    data["config"].update(head_changes)
    path.write_text(json.dumps(data))
    return AutoAdapterModel.from_config(tiny_config("bert")).eval()


@pytest.mark.parametrize("changes", [{"layers": 200_000}, {"layers": 10**9}, {"num_labels": 10**9}])
def test_huge_heads_fail_fast(tmp_path, changes):
    import time
    fresh = _saved_head(tmp_path, **changes)
    start = time.perf_counter()
    peak_holder = []

    def load():
        with pytest.raises(AdapterError) as info:
            fresh.load_head(tmp_path)
        peak_holder.append(info.value)

    _guarded(load)
    assert time.perf_counter() - start < 5
    assert str(tmp_path) in str(peak_holder[0])
    assert "h" not in fresh.heads


def test_head_layers_are_bounded_in_the_config():
    model = AutoAdapterModel.from_config(tiny_config("bert")).eval()
    with pytest.raises(AdapterError, match="layers"):
        model.add_classification_head("h", num_labels=3, layers=200_000)
