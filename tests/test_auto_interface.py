"""The automatic interface (adapterkit.interfaces.infer): on architectures with a named interface it finds the
same sites; on others it finds what it can confirm by the check forward, and refuses the rest naming the piece."""

from __future__ import annotations

import dataclasses

import logging

import pytest
import torch
import transformers as tf

import adapterkit
from adapterkit import AdapterError
from adapterkit.interfaces import FusedSlice, ModelInterface, ResidualSite, SublayerSite, get_interface
from adapterkit.interfaces.infer import dummy_inputs, infer_interface

import archs
from tiny_configs import tiny_config


def _tiny(model_type: str, seed: int = 0):
    torch.manual_seed(seed)
    return tf.AutoModel.from_config(tiny_config(model_type)).eval()


def _model(name: str):
    return archs.model(name) if name in archs.ARCHS else _tiny(name)


def _site(spec):  # what must agree: where h is taken and the norm; the residual module may be another reader of x
    if isinstance(spec, ResidualSite):
        return spec
    return (spec.output, spec.layer_norm)


NAMED = ["bert", "roberta", "distilbert", "electra", "gpt2", "llama", "qwen2", "t5", "t5-gated", "bart", "vit",
         "gemma2", "gemma3_text", "phi", "gptj", "cohere", "olmo2", "starcoder2", "mbart", "plbart", "mt5",
         "modernbert", "clip_text_model", "clip_vision_model", "whisper", "bert-generation", "albert", "beit"]


@pytest.mark.parametrize("name", NAMED)
def test_inferred_interface_finds_the_named_interfaces_sites(name):
    model = _model(name)
    inferred, named = infer_interface(model), get_interface(model.config.model_type)
    if inferred.cross_attention is None and not getattr(model.config, "add_cross_attention", False):
        # (BERT's named interface also describes the cross-attention of its decoders: absent here)
        named = dataclasses.replace(named, cross_attention=None, cross_attention_projections={}, residual_sites={
            k: v for k, v in named.residual_sites.items() if k != "cross_adapter"})
    assert inferred.unresolved == {}
    assert inferred.layers == tuple(p.rstrip("?") for p in named.layers)
    assert inferred.attention == named.attention
    assert set(inferred.intermediate) == {p for alt in named.intermediate for p in alt.rstrip("?").split("|")
                                          if p in inferred.intermediate} and len(inferred.intermediate) >= 1
    assert inferred.output == named.output
    assert {k: v.rstrip("?") for k, v in named.cross_attention_projections.items()} == \
        inferred.cross_attention_projections
    assert {k: _site(v) for k, v in inferred.residual_sites.items()} == \
        {k: _site(v) for k, v in named.residual_sites.items()}
    assert (inferred.self_attention, inferred.cross_attention) == (named.self_attention, named.cross_attention)
    assert inferred.attention_registry == named.attention_registry


@pytest.mark.parametrize("name", ["gpt2", "t5", "bart", "bert", "gemma2"])
def test_the_logged_source_rebuilds_the_same_interface(name):
    interface = infer_interface(_model(name))
    namespace: dict = {}
    exec(interface.to_source(), namespace)  # noqa: S102 - the point: the source a user copies runs
    assert namespace["INTERFACE"] == interface


def test_init_infers_an_interface_where_none_is_registered_and_logs_it(caplog):
    model = _tiny("biogpt")
    with pytest.raises(AdapterError):
        get_interface("biogpt")
    with caplog.at_level(logging.INFO, logger="adapterkit.interfaces.infer"):
        adapterkit.init(model)
    assert "ModelInterface(" in caplog.text and "'self_attn.q_proj'" in caplog.text
    interface = model.adapter_state.interface
    assert interface.residual_sites["mh_adapter"] == SublayerSite(output="self_attn", residual="self_attn_layer_norm")
    inputs = dummy_inputs(model, batch=2)
    with torch.no_grad():
        before = model(**inputs)[0]
    model.add_adapter("a", config="seq_bn")
    model.train_adapter("a")
    out = model(**inputs)[0]
    out.sum().backward()
    assert all(p.grad is not None for p in model.adapterkit["a"].parameters())
    assert out.shape == before.shape


def test_fused_qkv_without_a_confirmed_layout_is_refused_by_name():
    """DeBERTa: `in_proj` (per-head interleaved) but no attention registry to confirm it: q/k/v are left out, and
    so is prefix tuning; what the check forward confirmed still works."""
    model = archs.model("deberta")
    adapterkit.init(model, interface=infer_interface(model))
    with pytest.raises(AdapterError, match=r"attn_q \(the q/k/v layout of the fused attention.self.in_proj"):
        model.add_adapter("a", config="lora")
    with pytest.raises(AdapterError, match="attention_registry"):
        model.add_adapter("p", config="prefix_tuning")
    model.add_adapter("b", config="lora[attn_matrices=['o'],output_lora=True]")
    model.add_adapter("c", config="seq_bn")
    assert set(model.adapters_config) == {"b", "c"}


def test_a_scaled_residual_add_leaves_the_bottleneck_sites_out_naming_them():
    """Granite adds `x + h * residual_multiplier` (a float, not a module): no module's output is what the layer
    adds, so no bottleneck site, and the refusal says why; LoRA still attaches."""
    config = tiny_config("granite")
    config.residual_multiplier = 0.5
    torch.manual_seed(0)
    model = tf.AutoModel.from_config(config).eval()
    adapterkit.init(model, interface=infer_interface(model))
    with pytest.raises(AdapterError, match=r"no 'output_adapter' site.*\(output_adapter: no residual add"):
        model.add_adapter("a", config="seq_bn")
    model.add_adapter("b", config="lora")


def test_a_layer_scale_inside_a_module_is_found():
    """BEiT scales each sublayer output by a learnt lambda and adds it after its (shared) drop_path module: the
    site is that module's output, where the layer adds h to x."""
    interface = infer_interface(_tiny("beit"))
    assert interface.residual_sites["mh_adapter"] == SublayerSite(output="drop_path", residual="layernorm_before")
    assert interface.residual_sites["output_adapter"] == SublayerSite(output="drop_path", residual="layernorm_after")


def test_mixture_of_experts_ffn_is_its_fused_experts_and_its_block():
    """The experts' 3D weights are the FFN projections (per-expert LoRA / (IA)^3, tests/test_moe.py), the MoE
    block's output the FFN sublayer's; a method that cannot adapt fused experts is refused, naming them."""
    model = _tiny("qwen3_moe")
    interface = infer_interface(model)
    assert interface.intermediate == ("mlp.experts.gate_up_proj",)
    assert interface.output == ("mlp.experts.down_proj",)
    assert interface.residual_sites["output_adapter"].output == "mlp"
    adapterkit.init(model, interface=interface)
    model.add_adapter("a", config="lora[intermediate_lora=True]")
    with pytest.raises(AdapterError, match="fused mixture-of-experts weight"):
        model.add_adapter("l", config="loha[intermediate=True]")
    for name, config in (("b", "lora"), ("c", "prefix_tuning"), ("d", "seq_bn"), ("e", "ia3")):
        model.add_adapter(name, config=config)


def test_no_layer_stack_is_a_clear_error():
    """init still works (module-targeted adapters need no interface); a located adapter is refused, saying why."""
    model = adapterkit.init(_tiny("convnext"))
    with pytest.raises(AdapterError, match="none could be inferred.*ConvNextModel has no layer stack"):
        model.add_adapter("a", "seq_bn")


def _delta_rows(model, name, module):
    before = module.weight.detach().clone()
    model.merge_adapter(name)
    rows = (module.weight - before).abs().sum(dim=1).nonzero().flatten()
    model.reset_adapter(name)
    return rows


@pytest.mark.parametrize("model_type,overrides,expected", [
    ("phi3", {"num_key_value_heads": 2}, FusedSlice("self_attn.qkv_proj", 0, sizes=(32, 16, 16))),  # grouped q|k|v
    ("gpt_neox", {}, FusedSlice("attention.query_key_value", 0, per_head="num_attention_heads")),  # per head
    ("falcon", {}, FusedSlice("self_attention.query_key_value", 0, sizes=(32, 8, 8))),  # no registry: causal check
])
def test_fused_projections_are_split_as_the_check_forward_confirms(model_type, overrides, expected):
    config = tiny_config(model_type)
    for k, v in overrides.items():
        setattr(config, k, v)
    torch.manual_seed(0)
    model = tf.AutoModel.from_config(config).eval()
    interface = infer_interface(model)
    assert interface.attention["q"] == expected
    adapterkit.init(model, interface=interface)
    model.add_adapter("q", config="lora[attn_matrices=['q']]")
    with torch.no_grad():
        for p in model.adapterkit["q"].parameters():
            p.normal_()
    fused = model.adapter_state.layers[0].get_submodule(expected.module)
    rows = _delta_rows(model, "q", fused)
    out = fused.weight.shape[0]
    if expected.per_head:
        hd = out // 3 // config.num_attention_heads
        assert all((r // hd) % 3 == 0 for r in rows.tolist())
    else:
        assert rows.max() < expected.sizes[0] and rows.numel() == expected.sizes[0]


def test_an_interface_without_a_site_refuses_the_method_with_the_recorded_reason():
    base = get_interface("llama")
    interface = ModelInterface(model_types=("x",), embeddings=base.embeddings, layers=base.layers,
                               attention={"o": "self_attn.o_proj"}, intermediate=(), output=(),
                               residual_sites={}, unresolved={"attn_q": "why q is unknown",
                                                              "output_adapter": "why the FFN site is unknown"})
    model = adapterkit.init(archs.model("llama"), interface=interface)
    with pytest.raises(AdapterError, match=r"attn_q \(why q is unknown\)"):
        model.add_adapter("a", config="lora")
    with pytest.raises(AdapterError, match="why the FFN site is unknown"):
        model.add_adapter("b", config="seq_bn")
