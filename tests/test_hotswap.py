"""model.hotswap_adapter: an adapter's weights replaced in place give what a freshly loaded adapter gives, a compiled
model keeps its graph (no recompile across ranks <= the prepared maximum and other alphas), and a swap that does not
fit is refused before anything is written."""

from __future__ import annotations

import pytest
import torch

import adapterkit
import archs
from adapterkit import AdapterError

# (config of the served adapter, config of the one swapped in): other rank, other alpha, same kind
PAIRS = {
    "lora": ("lora[r=8,alpha=16]", "lora[r=4,alpha=2]"),
    "rslora": ("lora[r=8,alpha=16,intermediate_lora=True]", "lora[r=2,alpha=3,use_rslora=True,intermediate_lora=True]"),
    "dora": ("dora[r=8,alpha=8]", "dora[r=4,alpha=12]"),
    "ia3": ("ia3", "ia3[alpha=2.5]"),
    "seq_bn": ("seq_bn[reduction_factor=4]", "seq_bn[reduction_factor=4]"),
}


def _saved(tmp_path, arch: str, config: str, tag: str, seed: int, fmt: str = "adapterkit") -> str:
    """An adapter of `config` with random weights, saved; its directory."""
    donor = archs.randomised(arch, {tag: config}, seed=seed)
    path = tmp_path / f"{tag}-{fmt}"
    donor.save_adapter(path, tag, format=fmt)
    return str(path)


def _fresh(arch: str, path: str):
    """The reference: a new model with only the adapter at `path`, loaded and active."""
    model = adapterkit.init(archs.model(arch))
    model.load_adapter(path, load_as="x", set_active=True)
    return model


def _out(model, batch):
    with torch.no_grad():
        return model(**batch).last_hidden_state


def _weights(model, name: str) -> dict:
    return {k: v.detach().clone() for k, v in model.adapterkit[name].named_parameters()}


@pytest.mark.parametrize("arch", ["llama", "bert"])
@pytest.mark.parametrize("kind", list(PAIRS))
def test_swap_equals_fresh_load_and_saves_what_was_swapped_in(tmp_path, arch, kind):
    first, second = PAIRS[kind]
    path_a, path_b = _saved(tmp_path, arch, first, "a", 1), _saved(tmp_path, arch, second, "b", 2)
    batch = archs.inputs(arch)
    model = _fresh(arch, path_a)
    before = _out(model, batch)
    model.prepare_for_hotswap("x", max_rank=8 if kind in ("lora", "rslora", "dora") else None)
    torch.testing.assert_close(_out(model, batch), before, atol=1e-5, rtol=1e-5)  # padding changes nothing
    model.hotswap_adapter("x", path_b)
    expected = _out(_fresh(arch, path_b), batch)
    assert not torch.allclose(before, expected)
    torch.testing.assert_close(_out(model, batch), expected, atol=1e-5, rtol=1e-5)
    # the adapter now is the one swapped in: saved, it loads anywhere and computes the same
    model.save_adapter(tmp_path / "again", "x")
    torch.testing.assert_close(_out(_fresh(arch, str(tmp_path / "again")), batch), expected, atol=1e-5, rtol=1e-5)
    # and back: the larger rank fits the padded tensors again
    model.hotswap_adapter("x", path_a)
    torch.testing.assert_close(_out(model, batch), before, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fmt", ["peft", "adapterhub"])
def test_swap_from_other_formats_and_from_a_state_dict(tmp_path, fmt):
    path_a = _saved(tmp_path, "llama", "lora[r=8,alpha=16]", "a", 1)
    path_b = _saved(tmp_path, "llama", "lora[r=4,alpha=8]", "b", 2, fmt=fmt)
    batch = archs.inputs("llama")
    expected = _out(_fresh("llama", path_b), batch)
    model = _fresh("llama", path_a)
    model.prepare_for_hotswap("x", max_rank=8)
    model.hotswap_adapter("x", path_b)
    torch.testing.assert_close(_out(model, batch), expected, atol=1e-5, rtol=1e-5)
    donor = _fresh("llama", path_a)  # a state dict with the config it belongs to
    model.hotswap_adapter("x", donor.adapterkit["x"].state_dict(), config=donor.adapters_config["x"])
    torch.testing.assert_close(_out(model, batch), _out(donor, batch), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch,kind", [("llama", "lora"), ("llama", "ia3"), ("bert", "dora")])
def test_compiled_model_does_not_recompile_across_ranks_and_alphas(tmp_path, arch, kind):
    configs = {
        "lora": ["lora[r=16,alpha=16,intermediate_lora=True]", "lora[r=4,alpha=32,intermediate_lora=True]",
                 "lora[r=9,alpha=3,use_rslora=True,intermediate_lora=True]"],
        "ia3": ["ia3", "ia3[alpha=3]", "ia3[alpha=0.5]"],
        "dora": ["dora[r=16,alpha=16]", "dora[r=4,alpha=2]", "dora[r=8,alpha=40]"],
    }[kind]
    paths = [_saved(tmp_path, arch, c, f"s{i}", 10 + i) for i, c in enumerate(configs)]
    batch = archs.inputs(arch)
    expected = [_out(_fresh(arch, p), batch) for p in paths]
    torch._dynamo.reset()
    model = _fresh(arch, paths[0])
    model.prepare_for_hotswap("x", max_rank=16 if kind != "ia3" else None)
    compiled = torch.compile(model, backend="eager", fullgraph=True)  # fullgraph: a graph break raises
    torch._dynamo.utils.counters.clear()
    with torch.no_grad(), torch._dynamo.config.patch(error_on_recompile=True):
        outs = [compiled(**batch).last_hidden_state]
        for path in paths[1:] + paths[:1]:
            model.hotswap_adapter("x", path)
            outs.append(compiled(**batch).last_hidden_state)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    for out, want in zip(outs, expected[:1] + expected[1:] + expected[:1]):
        torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)


def test_without_prepare_same_shape_swaps_in_place_and_another_alpha_follows_eagerly(tmp_path):
    """Not prepared: a lower rank still fits (zero-padded into the tensors it has) and another alpha is honoured;
    only a compiled model would compile again for the new alpha."""
    path_a = _saved(tmp_path, "llama", "lora[r=8,alpha=16]", "a", 1)
    path_b = _saved(tmp_path, "llama", "lora[r=4,alpha=2]", "b", 2)
    model = _fresh("llama", path_a)
    ids = {id(p) for p in model.adapterkit.parameters()}
    model.hotswap_adapter("x", path_b)
    assert {id(p) for p in model.adapterkit.parameters()} == ids
    batch = archs.inputs("llama")
    torch.testing.assert_close(_out(model, batch), _out(_fresh("llama", path_b), batch), atol=1e-5, rtol=1e-5)


def _refused(model, name, source, match, **kwargs):
    before = _weights(model, name)
    config = model.adapters_config[name]
    with pytest.raises(AdapterError, match=match):
        model.hotswap_adapter(name, source, **kwargs)
    after = _weights(model, name)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert model.adapters_config[name] is config


def test_refusals_name_the_problem_and_leave_the_weights_intact(tmp_path):
    path_a = _saved(tmp_path, "llama", "lora[r=8,alpha=16]", "a", 1)
    model = _fresh("llama", path_a)
    model.prepare_for_hotswap("x", max_rank=8)
    state = {k: v.clone() for k, v in model.adapterkit["x"].state_dict().items()}
    key = "layers.0.attn_q.lora_A"

    # rank above the maximum; the message names the key, the rank and the maximum (and the first module written)
    _refused(model, "x", _saved(tmp_path, "llama", "lora[r=12,alpha=16]", "big", 3),
             r"rank above the maximum.*has rank 12, the maximum there is 8.*max_rank")
    # wrong shape: a tensor that does not fit what its config describes
    _refused(model, "x", {**state, key: torch.zeros(8, 5)}, r"wrong shapes: layers.0.attn_q.lora_A has shape \(8, 5\)")
    # unknown and missing keys
    _refused(model, "x", {**state, "layers.0.attn_q.lora_C": torch.zeros(1)}, r"unexpected weights: .*lora_C")
    _refused(model, "x", {k: v for k, v in state.items() if k != key}, r"missing weights: layers.0.attn_q.lora_A")
    # another method, and another kind within the method (DoRA: same keys plus a magnitude, other math)
    _refused(model, "x", _saved(tmp_path, "llama", "seq_bn", "bn", 4), r"is a lora adapter .* holds a bottleneck one")
    _refused(model, "x", _saved(tmp_path, "llama", "dora[r=8]", "d", 5), r"use_dora=True \(the adapter has False\)")
    # other targets: allowed to differ are only rank / alpha fields, and they are listed
    _refused(model, "x", _saved(tmp_path, "llama", "lora[r=8,attn_matrices=['q','k']]", "qk", 6),
             r"attn_matrices=\['q', 'k'\].*may change only .*alpha.*r, rank_pattern")
    # not a path or a state dict
    _refused(model, "x", 3, r"a checkpoint directory .* or a state dict")
    # merged
    model.merge_adapter("x")
    _refused(model, "x", path_a, r"merged into the base weights; reset_adapter")


def test_prepare_refusals():
    model = archs.randomised("llama", {"l": "lora[r=8]", "i": "ia3", "b": "seq_bn"})
    with pytest.raises(AdapterError, match=r"max_rank=4 is below the rank it has at layers.0.attn_q \(r=8\)"):
        model.prepare_for_hotswap("l", max_rank=4)
    assert model.adapterkit["l"].layers["0"]["attn_q"].lora_A.shape[0] == 8
    with pytest.raises(AdapterError, match=r"\(IA\)\^3: it has no rank to pad"):
        model.prepare_for_hotswap("i", max_rank=4)
    with pytest.raises(AdapterError, match="has no rank to pad"):
        model.prepare_for_hotswap("b", max_rank=4)
    with pytest.raises(AdapterError, match="max_rank must be an integer >= 1"):
        model.prepare_for_hotswap("l", max_rank=0)


@pytest.mark.parametrize("arch,first,second", [("bert", "unipelt", "unipelt"),
                                               ("llama", "vera[r=4]", "vera[r=4,alpha=3]")])
def test_unions_and_vera_swap_too(tmp_path, arch, first, second):
    """A union's LoRA member and its other members (prefix, gated bottleneck) swap together; VeRA at its rank."""
    path_a, path_b = _saved(tmp_path, arch, first, "a", 1), _saved(tmp_path, arch, second, "b", 2)
    batch = archs.inputs(arch)
    model = _fresh(arch, path_a)
    model.prepare_for_hotswap("x")
    model.hotswap_adapter("x", path_b)
    torch.testing.assert_close(_out(model, batch), _out(_fresh(arch, path_b), batch), atol=1e-5, rtol=1e-5)


def test_unprepared_compiled_model_compiles_again_for_another_alpha(tmp_path):
    """The control for the no-recompile test: without prepare_for_hotswap the scaling is a Python float that dynamo
    guards on, so another alpha (same rank) makes the compiled model compile again (and still compute it)."""
    paths = [_saved(tmp_path, "llama", c, f"s{i}", 20 + i) for i, c in enumerate(["lora[r=4,alpha=4]",
                                                                                   "lora[r=4,alpha=12]"])]
    batch = archs.inputs("llama")
    torch._dynamo.reset()
    model = _fresh("llama", paths[0])
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    with torch.no_grad():
        compiled(**batch)
        model.hotswap_adapter("x", paths[1])
        with torch._dynamo.config.patch(error_on_recompile=True), pytest.raises(torch._dynamo.exc.RecompileError):
            compiled(**batch)
        torch.testing.assert_close(compiled(**batch).last_hidden_state, _out(_fresh("llama", paths[1]), batch),
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_benchmark_script_runs_on_a_tiny_shape(tmp_path):
    """benchmarks/hotswap.py end to end (both libraries, tiny Llama, the eager backend): no new graph during the
    swaps, and both libraries' compiled outputs equal the freshly loaded adapters."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "hotswap.py"
    out = tmp_path / "hotswap.json"
    subprocess.run([sys.executable, str(script), "--layers", "2", "--hidden", "64", "--heads", "4", "--kv-heads", "2",
                    "--ffn", "128", "--vocab", "256", "--seq", "16", "--rounds", "3", "--loop-rounds", "1",
                    "--backend", "eager", "--threads", "1", "--out", str(out)], check=True, capture_output=True)
    results = json.loads(out.read_text())["results"]
    for lib in ("adapterkit", "peft"):
        assert results[lib]["new_graphs_during_swaps"] == 0
        assert results[lib]["new_graphs_in_loop"] == 1
        assert results[lib]["max_abs_diff"] < 1e-4
