"""The package's structure is a contract: no import cycles, the layer contracts hold (and catch an upward import),
and a method written outside src/ plugs in through its MethodSpec alone."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest
import torch

import adapterkit
from adapterkit import AdapterError, BatchSplit, Stack
from adapterkit.registry import register_method, unregister_method

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import archs  # noqa: E402
import toy_method  # noqa: E402


def _cycles(package: str) -> list[list[str]]:
    """Strongly connected components of more than one module, over every import grimp finds (inside functions and
    TYPE_CHECKING blocks included)."""
    graph = grimp.build_graph(package)
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycles():
    assert _cycles("adapterkit") == []


def _lint_imports(src: Path) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"}
    return subprocess.run([str(Path(sys.executable).parent / "lint-imports"), "--config", str(ROOT / "pyproject.toml"),
                           "--no-cache"], cwd=src, env=env, capture_output=True, text=True)


def test_layer_contracts_hold_and_catch_an_upward_import(tmp_path):
    kept = _lint_imports(ROOT / "src")
    assert kept.returncode == 0, kept.stdout[-3000:]
    assert "0 broken" in kept.stdout
    copy = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "adapterkit", copy / "adapterkit")
    module = copy / "adapterkit" / "methods" / "lora" / "modules.py"
    module.write_text(module.read_text().replace("from . import fused\n", "from . import fused\nfrom ...state import "
                                                 "AdapterState  # noqa: F401\n"))
    broken = _lint_imports(copy)
    assert broken.returncode != 0
    assert "adapterkit.methods is not allowed to import adapterkit.state" in broken.stdout


@pytest.fixture
def toy():
    spec = toy_method.plug_in()
    yield spec
    unregister_method(spec.name)


def test_a_method_from_outside_plugs_in_saves_loads_and_is_summarised(toy, tmp_path):
    model = adapterkit.init(archs.model("bert"))
    inputs = archs.inputs("bert")
    base = model(**inputs).last_hidden_state
    model.add_adapter("t", config="scaled_identity[init_scale=0.5]")
    assert isinstance(model.adapters_config["t"], adapterkit.configs.ScaledIdentityConfig)
    model.set_active_adapters("t")
    out = model(**inputs).last_hidden_state
    assert (out - base).abs().max() > 1e-3
    model.train_adapter("t")
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        f"adapterkit.t.layers.{i}.{loc}.scale" for i in range(2) for loc in ("attn_q", "attn_v")}
    model.eval()
    rows = model.adapter_summary(as_dict=True)
    assert rows[0]["name"] == "t" and rows[0]["architecture"] == "scaled_identity" and rows[0]["#param"] == 4
    assert "scaled_identity" in model.adapter_summary()

    model.save_adapter(tmp_path / "t", "t")
    fresh = adapterkit.init(archs.model("bert"))
    assert fresh.load_adapter(tmp_path / "t", set_active=True) == "t"
    torch.testing.assert_close(fresh(**inputs).last_hidden_state, out)
    with pytest.raises(AdapterError, match="PEFT format"):
        model.save_adapter(tmp_path / "peft", "t", format="peft")
    with pytest.raises(adapterkit.AdapterConfigError, match="no AdapterHub form"):
        model.save_adapter(tmp_path / "hub", "t", format="adapterhub")
    with pytest.raises(AdapterError, match="merged"):
        model.merge_adapter("t")


def test_a_method_without_declared_blocks_runs_alone_only(toy):
    model = adapterkit.init(archs.model("bert"))
    model.add_adapter("t", config="scaled_identity")
    model.add_adapter("u", config="scaled_identity")
    model.set_active_adapters("t")  # alone: always allowed
    for setup in (Stack("t", "u"), BatchSplit("t", "u", batch_sizes=[1, 2])):
        with pytest.raises(AdapterError, match="scaled identity adapters support: no composition blocks"):
            model.set_active_adapters(setup)


def test_registering_a_name_twice_is_an_error(toy):
    with pytest.raises(AdapterError, match="already registered"):
        register_method(toy)
    with pytest.raises(AdapterError, match="already registered"):
        register_method(adapterkit.registry.spec_for("lora"))
