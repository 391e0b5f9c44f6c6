"""Prefix tuning in encoder-decoder models: one prefix module per kind of attention (encoder self-attention,
decoder self-attention, cross-attention), each over its own layers, as `adapters` builds them; `encoder_prefix` and
`cross_prefix` switch the encoder and cross-attention kinds. Exactness against the package: test_reference_archs.py.
"""

from __future__ import annotations

import pytest
import torch
import transformers as tf

import adapterkit
from adapterkit import AdapterError, AdapterSetup, Stack
from adapterkit.methods.prefix_tuning import FlatPrefixTuning

import archs

PREFIX = "prefix_tuning[prefix_length=3,bottleneck_size=8"


def groups(model, name="p") -> dict[str, list[int]]:
    shared = model.adapterkit[name].shared
    return {key: sorted(module.layer_index) for key, module in shared.items()}


@pytest.mark.parametrize("arch", ["bart", "t5"])
def test_each_attention_kind_has_its_own_prefix_module(arch):
    model = archs.randomised(arch, {"p": PREFIX + "]"})
    # layers are numbered encoder first (0, 1), then decoder (2, 3)
    assert groups(model) == {"prefix_encoder": [0, 1], "prefix": [2, 3], "prefix_cross": [2, 3]}
    sites = {key for key in model.adapter_state.sites if key[1] in ("prefix", "cross_prefix")}
    assert sites == {(0, "prefix"), (1, "prefix"), (2, "prefix"), (3, "prefix"), (2, "cross_prefix"),
                     (3, "cross_prefix")}


@pytest.mark.parametrize("arch", ["bart", "t5"])
def test_switches_and_leave_out(arch):
    model = archs.randomised(arch, {"p": PREFIX + ",encoder_prefix=False,cross_prefix=False]",
                                    "q": PREFIX + ",leave_out=[0,3]]"})
    assert groups(model, "p") == {"prefix": [2, 3]}
    assert groups(model, "q") == {"prefix_encoder": [1], "prefix": [2], "prefix_cross": [2]}
    inputs = archs.inputs(arch)
    with torch.no_grad():
        base = model(**inputs)
        model.set_active_adapters("p")
        out = model(**inputs)
    # no encoder prefix: the encoder computes what it did without the adapter; the decoder does not
    torch.testing.assert_close(out.encoder_last_hidden_state, base.encoder_last_hidden_state, atol=0, rtol=0)
    assert (out.last_hidden_state - base.last_hidden_state).abs().max() > 1e-3


def test_cross_prefix_changes_only_the_decoder():
    """The cross-attention prefix is used: the decoder output moves when only its keys/values change (to zeros);
    with no encoder prefix the encoder output is the plain model's."""
    cross = archs.randomised("bart", {"p": PREFIX + ",encoder_prefix=False]"})
    inputs = archs.inputs("bart")
    with torch.no_grad():
        base = cross(**inputs)
        cross.set_active_adapters("p")
        with_cross = cross(**inputs)
        prefix_cross = cross.adapterkit["p"].shared["prefix_cross"]
        prefix_cross.control_trans[2].weight.zero_()
        prefix_cross.control_trans[2].bias.zero_()
        zero_cross = cross(**inputs)  # keys and values 0: still attended (softmax weight), so still a change
    torch.testing.assert_close(with_cross.encoder_last_hidden_state, base.encoder_last_hidden_state, atol=0, rtol=0)
    assert (with_cross.last_hidden_state - zero_cross.last_hidden_state).abs().max() > 1e-3


def test_encoder_only_t5_has_the_encoder_kind_alone():
    model = adapterkit.init(archs.model("t5", cls=tf.T5EncoderModel))
    model.add_adapter("p", config=PREFIX + "]")
    assert groups(model) == {"prefix_encoder": [0, 1]}


def test_single_stack_models_keep_one_self_attention_module():
    model = archs.randomised("bert", {"p": PREFIX + "]"})
    assert groups(model) == {"prefix": [0, 1]}


@pytest.mark.parametrize("arch", ["bart", "t5"])
def test_eject_flattens_every_kind_with_the_same_outputs(arch):
    model = archs.randomised(arch, {"p": PREFIX + ",use_gating=True]"})
    model.set_active_adapters("p")
    inputs = archs.inputs(arch)
    with torch.no_grad():
        before = model(**inputs).last_hidden_state
        model.eject_prefix_tuning("p")
        after = model(**inputs).last_hidden_state
    shared = model.adapterkit["p"].shared
    assert set(shared) == {"prefix", "prefix_encoder", "prefix_cross"}
    assert all(isinstance(m, FlatPrefixTuning) for m in shared.values())
    assert model.adapter_state.configs["p"].flat
    torch.testing.assert_close(after, before, atol=1e-6, rtol=0)


def test_cross_attention_gates_report_their_own_location():
    model = archs.randomised("bart", {"p": PREFIX + ",use_gating=True]"})
    model.set_active_adapters("p")
    with torch.no_grad():
        out = model(**archs.inputs("bart"), output_adapter_gating_scores=True)
    scores = out.adapter_gating_scores["p"]
    assert set(scores[0]) == {"prefix"} and set(scores[2]) == {"prefix", "cross_prefix"}


@pytest.mark.parametrize("arch", ["bart", "t5"])
def test_composition_rows_equal_each_adapter_alone(arch):
    """BatchSplit and Parallel over prefix adapters (encoder, decoder and cross-attention prefixes, one gated):
    each row gets what its adapter alone gives."""
    model = archs.randomised(arch, {"p1": PREFIX + "]", "p2": PREFIX + ",use_gating=True]"})
    inputs = archs.inputs(arch)
    with torch.no_grad():
        alone = {}
        for name in ("p1", "p2"):
            model.set_active_adapters(name)
            alone[name] = model(**inputs).last_hidden_state
        model.set_active_adapters(adapterkit.BatchSplit("p1", "p2", batch_sizes=[1, 2]))
        split = model(**inputs).last_hidden_state
        model.set_active_adapters(adapterkit.Parallel("p1", "p2"))
        parallel = model(**inputs).last_hidden_state
    torch.testing.assert_close(split, torch.cat([alone["p1"][:1], alone["p2"][1:]]), atol=1e-5, rtol=0)
    torch.testing.assert_close(parallel, torch.cat([alone["p1"], alone["p2"]]), atol=1e-5, rtol=0)


def test_shift_positions_moves_t5_keys_and_nothing_else():
    """shift_positions (the `adapters` package's T5 prefix semantics): on T5 the relative position bias is computed
    over prefix + sequence, which changes the output; on a model without such a bias it changes nothing; several
    active adapters, or per-example routing, with a shifted prefix are refused (the package's behaviour there is
    unchecked)."""
    config = "prefix_tuning[prefix_length=3,bottleneck_size=8]"
    shifted = "prefix_tuning[prefix_length=3,bottleneck_size=8,shift_positions=True]"
    models = {}
    for arch, changes in (("bert", False), ("t5", True)):
        model = models[arch] = archs.randomised(arch, {"plain": config, "shifted": shifted}, scale=0.3)
        model.adapterkit["shifted"].load_state_dict(model.adapterkit["plain"].state_dict())
        model.eval()
        batch = archs.inputs(arch)
        with torch.no_grad():
            with AdapterSetup("plain"):
                plain = model(**batch)[0]
            with AdapterSetup("shifted"):
                moved = model(**batch)[0]
        assert bool((plain - moved).abs().max() > 1e-3) == changes, arch
    model = models["t5"]
    model.set_active_adapters(Stack("plain", "shifted"))
    with pytest.raises(AdapterError, match="shift_positions=True .* runs as the only active adapter"):
        model(**archs.inputs("t5"))
    model.set_active_adapters("shifted")
    with pytest.raises(AdapterError, match="with per-example routing"):
        model(**archs.inputs("t5"), adapter_names=["shifted", "plain", "shifted"])
