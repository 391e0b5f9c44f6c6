"""peft's `target_modules` for the LoRA family (configs/module_targets.py, methods/lora/targets.py): module names,
a regex or "all-linear", on nn.Linear, Conv1D, nn.Embedding, nn.Conv1d and nn.Conv2d, on models with and without
an adapterkit interface; PEFT files load both ways with peft's outputs, merge and reset are exact."""

from __future__ import annotations

import warnings

import peft
import pytest
import torch
import transformers as tf

import adapterkit
from adapterkit import AdapterError, IA3Config, LoRAConfig

import archs

ATOL = 1e-6


def _llama():
    return archs.model("llama")


def _opt():  # no adapterkit interface
    torch.manual_seed(0)
    return tf.OPTModel(tf.OPTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=64,
                                    vocab_size=99, word_embed_proj_dim=32)).eval()


def _convnext():  # no interface; Conv2d stem (4x4, stride 4) and downsampling (2x2, stride 2), Linear pointwise
    torch.manual_seed(0)
    return tf.ConvNextModel(tf.ConvNextConfig(num_channels=3, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2,
                                              image_size=32)).eval()


def _wav2vec2():  # no interface; a Conv1d feature extractor (kernel 10 / 3, stride 5 / 2)
    torch.manual_seed(0)
    return tf.Wav2Vec2Model(tf.Wav2Vec2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                              intermediate_size=64, conv_dim=(8, 8), conv_stride=(5, 2),
                                              conv_kernel=(10, 3), num_conv_pos_embeddings=4,
                                              num_conv_pos_embedding_groups=2, do_stable_layer_norm=True)).eval()


MODELS = {"llama": _llama, "opt": _opt, "convnext": _convnext, "wav2vec2": _wav2vec2}


def _inputs(kind):
    g = torch.Generator().manual_seed(3)
    if kind == "convnext":
        return {"pixel_values": torch.randn(2, 3, 32, 32, generator=g)}
    if kind == "wav2vec2":
        return {"input_values": torch.randn(2, 400, generator=g)}
    return {"input_ids": torch.randint(1, 99, (2, 7), generator=g)}


def _out(model, kind):
    with torch.no_grad():
        return model(**_inputs(kind)).last_hidden_state


def _randomise(model, prefix=""):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(prefix) and any(k in name for k in ("lora_", "ia3_l", "hada_", "lokr_", "magnitude",
                                                                   "vera_lambda")):
                p.copy_(torch.randn(p.shape, generator=g) * 0.3 + (1.0 if "ia3_l" in name else 0.0))


def _peft_made(kind, config, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = peft.get_peft_model(MODELS[kind](), config).eval()
    _randomise(model)
    model.save_pretrained(path)
    return model


def _load_in_peft(kind, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return peft.PeftModel.from_pretrained(MODELS[kind](), path).eval()


# (model, peft config, the same adapter as an adapterkit config)
CASES = {
    "all-linear": ("llama", lambda: peft.LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"),
                   LoRAConfig(r=4, alpha=8, target_modules="all-linear")),
    "regex": ("llama", lambda: peft.LoraConfig(r=2, target_modules=r".*layers\.1\..*(q|gate)_proj"),
              LoRAConfig(r=2, alpha=8, target_modules=r".*layers\.1\..*(q|gate)_proj")),
    "embedding": ("llama", lambda: peft.LoraConfig(r=4, lora_alpha=16, target_modules=["embed_tokens", "v_proj"]),
                  LoRAConfig(r=4, alpha=16, target_modules=["embed_tokens", "v_proj"])),
    "exclude": ("llama", lambda: peft.LoraConfig(r=2, target_modules="all-linear", exclude_modules=["o_proj"]),
                LoRAConfig(r=2, target_modules="all-linear", exclude_modules=["o_proj"])),
    "no-interface": ("opt", lambda: peft.LoraConfig(r=4, target_modules=["q_proj", "fc2", "embed_tokens"]),
                     LoRAConfig(r=4, target_modules=["q_proj", "fc2", "embed_tokens"])),
    "dora": ("opt", lambda: peft.LoraConfig(r=2, use_dora=True, target_modules=["k_proj", "fc1"]),
             LoRAConfig(r=2, use_dora=True, dora_semantics="peft", target_modules=["k_proj", "fc1"])),
    "ia3": ("opt", lambda: peft.IA3Config(target_modules=["k_proj", "fc2"], feedforward_modules=["fc2"]),
            IA3Config(target_modules=["k_proj", "fc2"], feedforward_modules=["fc2"])),
    "conv2d": ("convnext", lambda: peft.LoraConfig(r=2, target_modules=["patch_embeddings", "downsampling_layer.1",
                                                                         "pwconv1"]),
               LoRAConfig(r=2, target_modules=["patch_embeddings", "downsampling_layer.1", "pwconv1"])),
    "ia3-conv2d": ("convnext", lambda: peft.IA3Config(target_modules=["patch_embeddings", "downsampling_layer.1"],
                                                       feedforward_modules=["downsampling_layer.1"]),
                   IA3Config(target_modules=["patch_embeddings", "downsampling_layer.1"],
                             feedforward_modules=["downsampling_layer.1"])),
    "conv1d": ("wav2vec2", lambda: peft.LoraConfig(r=2, target_modules=r".*conv_layers\.\d\.conv"),
               LoRAConfig(r=2, target_modules=r".*conv_layers\.\d\.conv")),
    "loha": ("opt", lambda: peft.LoHaConfig(r=2, target_modules=["q_proj", "fc1"]),
             adapterkit.LoHaConfig(r=2, target_modules=["q_proj", "fc1"])),
}


@pytest.mark.parametrize("case", list(CASES))
def test_peft_adapter_loads_with_peft_outputs(case, tmp_path):
    kind, peft_config, _ = CASES[case]
    made = _peft_made(kind, peft_config(), tmp_path)
    expected = _out(made, kind)
    model = adapterkit.init(MODELS[kind]())
    base = _out(model, kind)
    model.load_adapter(tmp_path, set_active=True)
    assert (expected - base).abs().max() > 1e-3  # the adapter changes the outputs
    assert (_out(model, kind) - expected).abs().max() <= ATOL


@pytest.mark.parametrize("case", list(CASES))
def test_export_loads_in_peft(case, tmp_path):
    kind, _, config = CASES[case]
    model = adapterkit.init(MODELS[kind]())
    model.add_adapter("a", config, set_active=True)
    _randomise(model, "adapterkit.")
    expected = _out(model, kind)
    model.save_adapter(tmp_path, "a", format="peft")
    loaded = _load_in_peft(kind, tmp_path)
    assert (_out(loaded, kind) - expected).abs().max() <= ATOL
    again = adapterkit.init(MODELS[kind]())  # and back
    again.load_adapter(tmp_path, load_as="a", set_active=True)
    assert (_out(again, kind) - expected).abs().max() <= ATOL
