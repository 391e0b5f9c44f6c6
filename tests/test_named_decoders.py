"""Named interfaces of models the `adapters` package lacks (phi3, gpt_neox, granite, stablelm, falcon, codegen,
moshi, minicpm5_moe, and the VitDet backbone), in each layout their configs choose: grouped-query fused q/k/v sized
from the config, Falcon's three query_key_value layouts (config variants), CodeGen's 4 groups of [q | v | k],
MiniCPM5's query fused with an output gate per head, parallel and sequential residuals (path alternatives).

Two checks per layout: the rows a fused slice names are exactly the q / k / v values the model's attention
function receives (an oracle independent of the interface code: the fused output is replaced by its own column
numbers and the attention call is captured), and every method passes the sweep's checks (identity init, a change
once randomised, backward, merge, save/load, generate() with the KV cache)."""

from __future__ import annotations

import pytest
import torch
from transformers import AttentionInterface

import adapterkit
from adapterkit.interfaces import get_interface
from adapterkit.interfaces.base import FusedSlice

import model_sweep

LAYOUTS = {
    "phi3": {}, "phi3-mha": {"num_key_value_heads": None},  # (None: as many key/value heads as query heads)
    "gpt_neox-parallel": {"use_parallel_residual": True}, "gpt_neox-sequential": {"use_parallel_residual": False},
    "granite": {},
    "stablelm": {"use_parallel_residual": False}, "stablelm-parallel": {"use_parallel_residual": True},
    "falcon": {},  # multi-query, parallel, one norm
    # (num_key_value_heads: what the attention produces; the config derives it at construction, and the tiny
    # config's dict carries the multi-query default's)
    "falcon-per-head": {"multi_query": False, "num_kv_heads": None, "num_key_value_heads": None},
    "falcon-sequential": {"parallel_attn": False},
    "falcon-new": {"new_decoder_architecture": True, "num_kv_heads": 2, "num_key_value_heads": 2},
    "falcon-new-one-norm": {"new_decoder_architecture": True, "num_kv_heads": 2, "num_key_value_heads": 2,
                            "num_ln_in_parallel_attn": 1},
    "codegen": {}, "moshi": {}, "minicpm5_moe": {}, "vitdet": {},
}
# what a named interface refuses, by design (the reason must say so)
REFUSED = {("vitdet", "prefix_tuning"): "attention-function registry", ("vitdet", "prompt_tuning"): "input embeddings"}
ORACLE = ("phi3", "gpt_neox", "falcon", "codegen", "minicpm5_moe")  # (decoders whose attention calls the registry)
_BUILT: dict = {}


def _built(layout: str) -> model_sweep.Built:
    if layout not in _BUILT:
        model_type = layout.split("-")[0]
        overrides = dict(LAYOUTS[layout])
        for name in ("num_key_value_heads", "num_kv_heads"):
            if name in overrides and overrides[name] is None:
                overrides[name] = model_sweep.tiny_config(model_type).num_attention_heads
        built = _BUILT[layout] = model_sweep.build(model_type, **overrides)
        assert built.model is not None, built.why
        assert built.interface is get_interface(model_type)  # the named file, not an inferred interface
    return _BUILT[layout]


def _capture(seen: dict):
    def attention(module, query, key, value, attention_mask, **kwargs):
        seen.setdefault("qkv", (query, key, value))
        batch, heads, length, dim = query.shape
        return query.new_zeros(batch, length, heads, dim), None
    return attention


@pytest.mark.parametrize("layout", sorted(k for k in LAYOUTS if k.split("-")[0] in ORACLE))
def test_fused_slices_name_the_rows_the_attention_function_receives(layout):
    built = _built(layout)
    model = adapterkit.init(__import__("copy").deepcopy(built.model))
    state = model.adapter_state
    specs = state.interface.attention
    projections = {loc: p for layer, loc, p in state.projections(state.interface.linear_locations(
        attn_matrices="qkv")) if layer == 0}
    fused = {m: projections[f"attn_{m}"].module for m in "qkv" if isinstance(specs[m], FusedSlice)}
    assert fused and all(specs[m].grouped is None for m in fused)  # sized for this config
    for module in {id(m): m for m in fused.values()}.values():  # each fused projection in turn
        seen: dict = {}
        AttentionInterface.register("adapterkit_capture", _capture(seen))
        width = module.out_features
        codes = torch.arange(width, dtype=torch.float32)
        handle = module.register_forward_hook(lambda mod, args, out: codes.expand(*out.shape[:-1], width).clone())
        model.config._attn_implementation = "adapterkit_capture"
        try:
            with torch.no_grad():  # one token at position 0: rotary embeddings leave q and k as they are
                model(input_ids=torch.tensor([[5]]))
        finally:
            handle.remove()
        for name, received in zip("qkv", seen["qkv"]):
            if fused.get(name) is not module:
                continue
            rows = projections[f"attn_{name}"].rows
            rows = torch.arange(width)[rows] if isinstance(rows, slice) else rows
            # (batch 0, token 0): heads x head_dim in the order the projection's rows list them
            got = received[0, :, 0, :].reshape(-1)
            assert torch.equal(got.long(), rows), f"{layout}: the {name} slice names other rows than the model reads"


@pytest.mark.parametrize("method", sorted(model_sweep.METHODS))
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_method_on_every_layout(layout, method):
    status, reason = model_sweep.check(_built(layout), method)
    if (layout, method) in REFUSED:
        assert status == "refused" and REFUSED[layout, method] in reason, reason
    else:
        assert status == "ok", reason


def test_falcon_variants_pick_the_layout_from_the_config():
    layouts = {name: _built(name).model.config for name in ("falcon", "falcon-per-head", "falcon-new")}
    q = {name: get_interface("falcon").for_config(config).attention["q"] for name, config in layouts.items()}
    assert q["falcon"].sizes == (32, 8, 8) and q["falcon"].per_head is None  # [q | k | v], one kv head
    assert q["falcon-per-head"].per_head == "num_attention_heads" and q["falcon-per-head"].sizes is None
    assert q["falcon-new"].per_head == "num_kv_heads" and q["falcon-new"].sizes == (16, 8, 8)  # per group


def test_a_variant_naming_an_unknown_field_is_refused():
    interface = get_interface("granite")
    from dataclasses import replace
    with pytest.raises(ValueError, match="unknown interface field"):
        replace(interface, variants=(("tie_word_embeddings", {"atention": {}}),)).for_config(
            _built("granite").model.config)
