"""Fuzzing the loaders: mutated checkpoint directories either load or raise adapterkit's errors, and a failed load
leaves the model unchanged (issue 21).

Sources are real saves in every format (adapterkit, AdapterHub, PEFT adapters; adapterkit and AdapterHub heads;
adapterkit and AdapterHub fusions); mutations edit JSON values and keys, truncate or flip bytes, swap tensors'
shapes and dtypes, rename / drop / add tensors and delete files. The short test runs in the default suite; the
slow one runs for ADAPTERKIT_FUZZ_SECONDS (default 600) and prints how many inputs it tried.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

import adapterkit
from adapterkit import AutoAdapterModel
from adapterkit.errors import AdapterError

from ckpt_helpers import model_with, snapshot
from conftest import tiny_config, tiny_model
from test_fusion import fused_model

HEAD_FIXTURES = Path(__file__).parent / "fixtures" / "adapters_heads" / "bert"

JSON_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-10**12, 10**12),
    st.sampled_from([0, -1, 1, 2, 3, 32, 10**6, 10**9, 10**18, 0.5, 1e-9, 1e30]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6),
    st.sampled_from(["", "a", "b", "a,b", "gpt2", "bert", "lora", "pfeiffer", "prefix_tuning", "dynamic", "static",
                     "adapterkit", "adapterhub", "LORA", "classification", "tanh", "q", "output_adapter"]),
    st.lists(st.integers(-3, 40), max_size=4), st.just({}), st.just([]), st.just({"a": 1}), st.just([[1]]))


def _sources(root: Path) -> list[tuple[str, Path]]:
    out = []

    def adapter(tag, method, **save):
        model = model_with("bert", method)
        model.save_adapter(root / tag, "a", **save)
        out.append(("adapter", root / tag))

    adapter("native_lora", "lora")
    adapter("native_seq_bn", "seq_bn")
    adapter("native_prefix", "prefix_tuning")
    adapter("native_ia3", "ia3")
    adapter("hub_seq_bn", "seq_bn", format="adapterhub")
    adapter("hub_lora_bin", "lora", format="adapterhub", safetensors=False)
    adapter("peft_lora", "lora", format="peft")
    adapter("peft_ia3", "ia3", format="peft")
    heads = AutoAdapterModel.from_config(tiny_config("bert"))
    heads.add_classification_head("h", num_labels=3, layers=2)
    heads.save_head(root / "head_native", "h")
    out.append(("head", root / "head_native"))
    for case in ("cls", "tagging"):
        if (HEAD_FIXTURES / case).is_dir():
            shutil.copytree(HEAD_FIXTURES / case, root / f"head_hub_{case}")
            out.append(("hub_head", root / f"head_hub_{case}"))
    fusion = fused_model()
    for tag, options in (("fusion_native", {}), ("fusion_hub", {"format": "adapterhub"}),
                         ("fusion_hub_bin", {"format": "adapterhub", "safetensors": False})):
        fusion.save_adapter_fusion(root / tag, "a,b", **options)
        out.append(("fusion", root / tag))
    return out


def _hub_head_model():
    from test_head_checkpoints import fixture_model
    return fixture_model("bert")


def _fusion_model():
    model = fused_model()
    model.delete_adapter_fusion("a,b")
    return model


class Target:
    """One model per kind of checkpoint, reused: a successful load is undone, a failed one must change nothing."""

    def __init__(self, make, load, undo):
        self.model = make()
        self.load, self.undo = load, undo
        self.before = self.state()

    def state(self):
        shot = snapshot(self.model)
        shot.pop("sites")  # sites are installed lazily and may stay after an adapter is deleted again
        shot["heads"] = list(getattr(self.model, "heads", {}) or {})
        shot["fusions"] = dict(self.model.adapter_fusions)
        return shot

    def assert_unchanged(self):
        after = self.state()
        assert {k: v for k, v in after.items() if k != "state"} == {
            k: v for k, v in self.before.items() if k != "state"}
        assert after["state"].keys() == self.before["state"].keys()
        for k, v in self.before["state"].items():
            assert torch.equal(after["state"][k], v), k


def _targets():
    adapter = Target(lambda: adapterkit.init(tiny_model("bert")), lambda m, p: m.load_adapter(p),
                     lambda m, name: m.delete_adapter(name))
    head = Target(lambda: AutoAdapterModel.from_config(tiny_config("bert")), lambda m, p: m.load_head(p),
                  lambda m, name: m.delete_head(name))
    targets = {"adapter": adapter, "head": head,
               "fusion": Target(_fusion_model, lambda m, p: m.load_adapter_fusion(p),
                                lambda m, name: m.delete_adapter_fusion(name))}
    if HEAD_FIXTURES.is_dir():
        targets["hub_head"] = Target(_hub_head_model, lambda m, p: m.load_head(p), lambda m, name: m.delete_head(name))
    return targets


# -- mutations ---------------------------------------------------------------------------------------
def _json_paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _json_paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _json_paths(v, prefix + (i,))


def _mutate_json(path: Path, data) -> None:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return
    paths = list(_json_paths(obj))
    where = data.draw(st.sampled_from(paths))
    op = data.draw(st.sampled_from(["set", "set", "set", "delete", "rename", "add"]))
    if not where:
        obj = data.draw(JSON_VALUES) if op == "set" else obj
    else:
        parent = obj
        for step in where[:-1]:
            parent = parent[step]
        last = where[-1]
        if op == "set":
            parent[last] = data.draw(JSON_VALUES)
        elif op == "delete":
            del parent[last]
        elif op == "rename" and isinstance(parent, dict):
            parent[data.draw(st.text(max_size=8))] = parent.pop(last)
        elif op == "add" and isinstance(parent, dict):
            parent[data.draw(st.sampled_from(["name", "config", "r", "layers", "extra", "model_type", "format"]))] = \
                data.draw(JSON_VALUES)
    path.write_text(json.dumps(obj))


def _read_tensors(path: Path):
    try:
        if path.suffix == ".safetensors":
            return load_file(path)
        return torch.load(path, weights_only=True)
    except Exception:  # noqa: BLE001 - already corrupted by an earlier mutation: mutate its bytes instead
        return None


def _mutate_tensors(path: Path, data) -> None:
    tensors = _read_tensors(path)
    if not isinstance(tensors, dict) or not tensors:
        return _mutate_bytes(path, data)
    key = data.draw(st.sampled_from(sorted(tensors)))
    op = data.draw(st.sampled_from(["shape", "dtype", "drop", "rename", "add", "scalar"]))
    if op == "shape":
        shape = data.draw(st.lists(st.integers(0, 40), min_size=0, max_size=3))
        tensors[key] = torch.zeros(shape)
    elif op == "dtype":
        dtype = data.draw(st.sampled_from([torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int8,
                                           torch.bool, torch.uint8]))
        tensors[key] = tensors[key].to(dtype)
    elif op == "drop":
        del tensors[key]
    elif op == "rename":
        tensors[data.draw(st.sampled_from([key + "x", key.replace("0", "7"), "x", key.split(".")[-1]]))] = \
            tensors.pop(key)
    elif op == "add":
        tensors[key + ".extra"] = torch.zeros(2)
    else:
        tensors[key] = torch.tensor(float(data.draw(st.floats(allow_nan=True))))
    tensors = {k: v.contiguous().clone() for k, v in tensors.items()}
    if path.suffix == ".safetensors":
        save_file(tensors, path)
    else:
        torch.save(tensors, path)


def _mutate_bytes(path: Path, data) -> None:
    raw = bytearray(path.read_bytes())
    if not raw:
        return
    if data.draw(st.booleans()):
        del raw[data.draw(st.integers(0, len(raw) - 1)):]
    else:
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] ^= data.draw(st.integers(1, 255))
    path.write_bytes(bytes(raw))


def _resign(directory: Path) -> None:
    """Recompute the SHA-256 an adapterkit config records, so tensor edits get past it to the checks behind."""
    config = directory / "adapter_config.json"
    try:
        obj = json.loads(config.read_text())
        file = directory / obj["weights"]["file"]
        obj["weights"]["sha256"] = hashlib.sha256(file.read_bytes()).hexdigest()
    except Exception:  # noqa: BLE001 - nothing to re-sign
        return
    config.write_text(json.dumps(obj))


def _mutate(directory: Path, data) -> None:
    files = sorted(p for p in directory.iterdir() if p.is_file())
    if not files:
        return
    path = data.draw(st.sampled_from(files))
    kind = data.draw(st.sampled_from(["content", "content", "content", "bytes", "delete"]))
    if kind == "delete":
        path.unlink()
    elif kind == "bytes":
        _mutate_bytes(path, data)
    elif path.suffix == ".json":
        _mutate_json(path, data)
    else:
        _mutate_tensors(path, data)
        if data.draw(st.booleans()):
            _resign(directory)


# -- the property ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return _sources(tmp_path_factory.mktemp("fuzz_sources")), _targets(), {"inputs": 0, "loaded": 0}


def _check(world, data) -> None:
    sources, targets, counts = world
    kind, source = data.draw(st.sampled_from(sources))
    target = targets[kind]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / source.name
        shutil.copytree(source, work)
        for _ in range(data.draw(st.integers(1, 3))):
            _mutate(work, data)
        counts["inputs"] += 1
        try:
            name = target.load(target.model, work)
        except AdapterError:
            target.assert_unchanged()
            return
        counts["loaded"] += 1
        target.undo(target.model, name)
        target.assert_unchanged()


def _run(world, examples: int, seed: int | None = None):
    @settings(max_examples=examples, deadline=None, database=None, derandomize=seed is None,
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def prop(data):
        _check(world, data)

    if seed is not None:
        prop = __import__("hypothesis").seed(seed)(prop)
    prop()


def test_fuzz_loaders_short(world):
    """~30 s: a fixed (derandomised) sample of mutations over every source."""
    _run(world, examples=int(os.environ.get("ADAPTERKIT_FUZZ_EXAMPLES", "300")))
    print(f"fuzz: {world[2]['inputs']} inputs, {world[2]['loaded']} loaded")
    assert world[2]["inputs"] > 0


@pytest.mark.slow
def test_fuzz_loaders_long(world):
    """For ADAPTERKIT_FUZZ_SECONDS (default 600): rounds of random mutations, each round a new seed."""
    budget = float(os.environ.get("ADAPTERKIT_FUZZ_SECONDS", "600"))
    start, seed = time.monotonic(), 0
    try:
        while time.monotonic() - start < budget:
            _run(world, examples=200, seed=seed)
            seed += 1
    finally:
        print(f"fuzz: {world[2]['inputs']} inputs in {time.monotonic() - start:.0f} s, {world[2]['loaded']} loaded")
