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


MODELS = {"llama": _llama, "opt": _opt, "convnext": _convnext, "wav2vec2": _wav2vec2, "gpt2": lambda: archs.model("gpt2")}


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
    "lokr": ("opt", lambda: peft.LoKrConfig(r=2, target_modules=r".*layers\.0\..*(v_proj|fc2)"),
             adapterkit.LoKrConfig(r=2, target_modules=r".*layers\.0\..*(v_proj|fc2)")),
    "vera": ("opt", lambda: peft.VeraConfig(r=4, target_modules=["q_proj", "fc1"]),
             adapterkit.VeraConfig(r=4, target_modules=["q_proj", "fc1"])),
    "loha-conv2d": ("convnext", lambda: peft.LoHaConfig(r=2, target_modules=["patch_embeddings", "pwconv2"]),
                    adapterkit.LoHaConfig(r=2, target_modules=["patch_embeddings", "pwconv2"])),
    "loha-conv1d": ("wav2vec2", lambda: peft.LoHaConfig(r=2, alpha=4, target_modules=r".*conv_layers\.1\.conv"),
                    adapterkit.LoHaConfig(r=2, alpha=4, target_modules=r".*conv_layers\.1\.conv")),
    "gpt2-c_attn": ("gpt2", lambda: peft.LoraConfig(r=2, target_modules=["c_attn", "mlp.c_proj"]),
                    LoRAConfig(r=2, target_modules=["c_attn", "mlp.c_proj"])),
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


@pytest.mark.parametrize("kind,target_modules,exclude", [
    ("llama", "all-linear", None), ("llama", r".*\.(q|v)_proj", None), ("llama", ["mlp.up_proj", "o_proj"], None),
    ("opt", "all-linear", r".*fc\d"), ("gpt2", "all-linear", ["c_proj"]),
])
def test_selection_is_peft_s(kind, target_modules, exclude):
    """The modules selected are the ones peft wraps (suffix match for lists, full match for a regex, "all-linear"
    leaves the LM head out)."""
    make = (lambda: archs.model("gpt2", cls=tf.GPT2LMHeadModel)) if kind == "gpt2" else \
        (lambda: tf.OPTForCausalLM(_opt().config).eval()) if kind == "opt" else \
        (lambda: archs.model("llama", cls=tf.LlamaForCausalLM))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wrapped = peft.get_peft_model(make(), peft.LoraConfig(r=2, target_modules=target_modules,
                                                               exclude_modules=exclude))
    theirs = {n.removeprefix("base_model.model.") for n, m in wrapped.named_modules()
              if isinstance(m, peft.tuners.lora.LoraLayer)}
    model = adapterkit.init(make())
    model.add_adapter("a", LoRAConfig(r=2, target_modules=target_modules, exclude_modules=exclude))
    names = {id(m): n for n, m in model.named_modules()}
    ours = {names[id(model.adapter_state.sites[key].target.module)] for key in model.adapter_state.sites}
    assert ours == theirs and "lm_head" not in ours


@pytest.mark.parametrize("kind,config", [
    ("llama", LoRAConfig(target_modules=["embed_tokens", "k_proj"], init_weights="bert")),
    ("convnext", LoRAConfig(target_modules=["patch_embeddings", "downsampling_layer.1"], init_weights="bert")),
    ("convnext", IA3Config(target_modules=["patch_embeddings", "downsampling_layer.1"], init_weights="bert",
                           feedforward_modules=["patch_embeddings"])),
    ("wav2vec2", LoRAConfig(target_modules=r".*conv_layers\.\d\.conv", init_weights="bert")),
    ("opt", adapterkit.LoKrConfig(target_modules=["v_proj"], init_weights=False)),
    ("convnext", adapterkit.LoHaConfig(target_modules=["patch_embeddings", "downsampling_layer.1"],
                                       init_weights=False)),
])
def test_merge_and_reset(kind, config):
    model = adapterkit.init(MODELS[kind]())
    base, weights = _out(model, kind), {k: v.clone() for k, v in model.state_dict().items()}
    model.add_adapter("a", config, set_active=True)
    adapted = _out(model, kind)
    assert (adapted - base).abs().max() > 1e-3
    model.merge_adapter("a")
    targets = [site.target.module for site in model.adapter_state.sites.values()]
    assert targets and not any("forward" in m.__dict__ for m in targets)  # merged: they run as plain modules
    assert (_out(model, kind) - adapted).abs().max() <= 1e-5
    model.reset_adapter("a")
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items() if k in weights)
    assert (_out(model, kind) - adapted).abs().max() <= ATOL
    model.delete_adapter("a")
    assert torch.equal(_out(model, kind), base)


def test_trains_on_a_model_without_an_interface():
    model = adapterkit.init(_convnext())
    model.add_adapter("a", LoRAConfig(target_modules=["patch_embeddings", "pwconv1"]))
    model.train_adapter("a")
    model(**_inputs("convnext")).last_hidden_state.square().mean().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert grads and all(n.startswith("adapterkit.a.") for n in grads)
    assert all(g is not None and g.abs().sum() > 0 for n, g in grads.items() if "lora_B" in n)


@pytest.mark.parametrize("kind,config,message", [
    # ConvNeXt: no named interface and none inferred (no attention layer stack)
    ("convnext", "seq_bn", "no adapter interface for model_type 'convnext'.*none could be inferred.*target_modules"),
    ("convnext", LoRAConfig(), "no adapter interface for model_type 'convnext'"),
    ("llama", IA3Config(target_modules=["embed_tokens"]), "peft's \\(IA\\)\\^3 takes nn.Linear, Conv1D and nn.Conv2d"),
    ("wav2vec2", IA3Config(target_modules=r".*conv_layers\.0\.conv"), "\\(IA\\)\\^3 on .*Conv1d"),
    ("convnext", LoRAConfig(target_modules=["dwconv"]), "groups > 1"),
    ("convnext", adapterkit.DoRAConfig(target_modules=["patch_embeddings"]), "DoRA on .*linear modules only"),
    ("convnext", adapterkit.VeraConfig(target_modules=["patch_embeddings"]), "VeRA on .*linear modules only"),
    ("convnext", adapterkit.LoKrConfig(target_modules=["patch_embeddings"]), "LoKr takes linear modules only"),
    ("llama", LoRAConfig(target_modules=["input_layernorm"]), "LlamaRMSNorm\\), which LoRA-type adapters cannot"),
    ("llama", LoRAConfig(target_modules=["nothing_here"]), "selects no module of LlamaModel"),
])
def test_refusals_name_the_problem(kind, config, message):
    model = adapterkit.init(MODELS[kind]())
    with pytest.raises(AdapterError, match=message):
        model.add_adapter("a", config)
    assert "a" not in model.adapters_config and not model.adapter_state.sites


@pytest.mark.parametrize("fields,message", [
    (dict(target_modules=[]), "must be a non-empty list"), (dict(target_modules="("), "not a valid regular"),
    (dict(exclude_modules=["x"]), "only apply with target_modules"),
    (dict(target_modules=["q_proj"], leave_out=[0]), "leave_out"),
    (dict(target_modules=["q_proj"], use_gating=True), "use_gating"),
])
def test_config_checks(fields, message):
    with pytest.raises(adapterkit.AdapterConfigError, match=message):
        LoRAConfig(**fields)


def test_native_save_and_load_and_config_string(tmp_path):
    model = adapterkit.init(_opt())
    model.add_adapter("a", "lora[target_modules=['q_proj','embed_tokens'],init_weights=bert]", set_active=True)
    expected = _out(model, "opt")
    model.save_adapter(tmp_path, "a")
    again = adapterkit.init(_opt())
    again.load_adapter(tmp_path, set_active=True)
    assert again.adapters_config["a"].target_modules == ["q_proj", "embed_tokens"]
    assert torch.equal(_out(again, "opt"), expected)


def test_compositions_summary_and_adapterhub_refusal(tmp_path):
    model = adapterkit.init(_llama())
    for name in ("a", "b"):
        model.add_adapter(name, LoRAConfig(target_modules=["q_proj", "embed_tokens"], init_weights="bert"))
    x = _inputs("llama")
    with torch.no_grad():
        model.set_active_adapters("a")
        a = model(**x).last_hidden_state
        model.set_active_adapters("b")
        b = model(**x).last_hidden_state
        model.set_active_adapters(adapterkit.BatchSplit("a", "b", batch_sizes=[1, 1]))
        split = model(**x).last_hidden_state
    assert torch.allclose(split[0], a[0], atol=ATOL) and torch.allclose(split[1], b[1], atol=ATOL)
    assert "a" in model.adapter_summary()
    with pytest.raises(adapterkit.AdapterConfigError, match="selects its modules by name.*format='peft'"):
        model.save_adapter(tmp_path / "hub", "a", format="adapterhub")
    assert not (tmp_path / "hub").exists()
