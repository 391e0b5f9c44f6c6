"""PEFT checkpoints beyond BERT: decoder-only, ViT and encoder-decoder models (both stacks, cross-attention, T5's
sublayers addressed from the end), both ways against the real `peft` package (outputs within 1e-5)."""

from __future__ import annotations


import peft  # a test dependency: these checks must run, never skip
import pytest
import torch

import adapterkit
from adapterkit import AdapterConfigError

import archs
from test_checkpoint_peft import _peft_made, load_in_peft

ATOL = 1e-5

# adapterkit configs exported to PEFT
EXPORTS = {
    "bart": ["lora[attn_matrices=['q','k','v'],intermediate_lora=True,output_lora=True,leave_out=[1]]", "ia3"],
    "t5": ["lora[r=4,alpha=8,intermediate_lora=True,output_lora=True]", "ia3"],
    "t5-gated": ["lora[intermediate_lora=True]"],
    "llama": ["lora[attn_matrices=['q','k','v','o'],intermediate_lora=True,output_lora=True]", "ia3",
              "ia3[intermediate_lora=False,output_lora=True,scale_inputs=['output']]"],
    "distilbert": ["lora", "ia3"],
    "vit": ["lora[intermediate_lora=True]"],
    "gpt2": ["lora[attn_matrices=['o'],intermediate_lora=True,output_lora=True]",
             "ia3[attn_matrices=['q','v']]",  # parts of the fused c_attn: one peft vector, 1 on k's rows
             "ia3[attn_matrices=['q','k','v'],intermediate_lora=False,output_lora=True,scale_inputs=['output']]"],
    "deberta": ["ia3"],  # its in_proj's parts are interleaved per head
}
# peft configs loaded into adapterkit (target_modules as a peft user writes them)
IMPORTS = {
    "bart": lambda: peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "fc1"]),
    "t5": lambda: peft.LoraConfig(r=2, lora_alpha=4, target_modules=["q", "v", "wo"], layers_to_transform=[1],
                                  layers_pattern="block"),
    "t5-ia3": lambda: peft.IA3Config(target_modules=["k", "v", "wi"], feedforward_modules=[]),
    "t5-ia3-default": lambda: peft.IA3Config(),  # k, v and wo, whose input it scales (feedforward)
    "llama-ia3-default": lambda: peft.IA3Config(),  # k_proj, v_proj and down_proj (feedforward)
    "gpt2-ia3-default": lambda: peft.IA3Config(),  # the fused c_attn (split into q, k, v) and mlp.c_proj (feedforward)
    "llama": lambda: peft.LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj",
                                                                         "up_proj", "gate_proj", "down_proj"]),
}


def _bare(arch: str):
    return archs.model(arch)


def _out(model, arch):
    with torch.no_grad():
        return model(**archs.inputs(arch)).last_hidden_state


@pytest.mark.parametrize("arch,config", [(a, c) for a, configs in EXPORTS.items() for c in configs])
def test_export_loads_in_peft(arch, config, tmp_path):
    model = archs.randomised(arch, {"a": config}, scale=0.3)
    model.set_active_adapters("a")
    expected = _out(model, arch)
    model.save_adapter(tmp_path, "a", format="peft")
    peft_model = load_in_peft(_bare(arch), tmp_path)
    with peft_model.disable_adapter():
        assert (_out(peft_model, arch) - expected).abs().max() > 1e-2  # peft loaded something
    assert (_out(peft_model, arch) - expected).abs().max() <= ATOL


@pytest.mark.parametrize("kind", sorted(IMPORTS))
def test_peft_made_adapter_loads_in_adapterkit(kind, tmp_path):
    arch = kind.split("-")[0]
    path, peft_model = _peft_made(_bare(arch), IMPORTS[kind](), tmp_path)
    expected = _out(peft_model, arch)
    model = adapterkit.init(_bare(arch))
    name = model.load_adapter(path, load_as="p", set_active=True)
    with adapterkit.AdapterSetup(None):
        assert (_out(model, arch) - expected).abs().max() > 1e-2
    assert (_out(model, arch) - expected).abs().max() <= ATOL
    if kind == "t5":  # peft's layer numbers count within each stack: block 1 of the encoder and of the decoder
        assert model.adapters_config[name].leave_out == [0, 2]


def test_self_attention_only_peft_adapter_on_an_encoder_decoder_loads_by_module_name(tmp_path):
    """adapterkit's attention matrices cover self- and cross-attention together: a peft LoRA on the self-attention
    alone has no location config, so it loads by module name (target_modules, as peft) with peft's outputs."""
    path, peft_model = _peft_made(_bare("bart"), peft.LoraConfig(r=2, target_modules=["self_attn.q_proj"]), tmp_path)
    expected = _out(peft_model, "bart")
    model = adapterkit.init(_bare("bart"))
    name = model.load_adapter(path, set_active=True)
    assert model.adapters_config[name].target_modules is not None
    assert (_out(model, "bart") - expected).abs().max() <= ATOL


def test_lora_on_fused_slices_has_no_peft_form(tmp_path):
    """Our LoRA on GPT-2's c_attn parts (one update per part) has no PEFT form; peft's LoRA on the whole c_attn
    (one update over q, k and v) loads by module name, with peft's outputs ((IA)^3 there converts per part: the
    tests above)."""
    model = archs.randomised("gpt2", {"a": "lora"})
    with pytest.raises(AdapterConfigError, match="'attn_q' \\(a slice of a fused projection\\) has no module of its "
                                                 "own for PEFT to target"):
        model.save_adapter(tmp_path / "a", "a", format="peft")
    assert not (tmp_path / "a").exists()
    path, peft_model = _peft_made(_bare("gpt2"), peft.LoraConfig(r=2, target_modules=["c_attn"]), tmp_path / "peft")
    expected = _out(peft_model, "gpt2")
    model = adapterkit.init(_bare("gpt2"))
    name = model.load_adapter(path, set_active=True)
    assert model.adapters_config[name].target_modules == ["attn.c_attn"]
    assert (_out(model, "gpt2") - expected).abs().max() <= ATOL
