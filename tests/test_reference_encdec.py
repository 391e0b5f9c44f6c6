"""EncoderDecoderModel (BERT2BERT) against the `adapters` package: its files (tools/make_encdec_fixtures.py) load
through `load_adapter` with the composed named interface and give its logits within 1e-5, for bottleneck
adapters (the package's mh_adapter also adapts the decoder's cross-attention: kept, as cross_adapter), LoRA, FFN
LoRA, (IA)^3 and prefix tuning (a prefix pool per side). The invertible adapter: the package never inverts it
before the decoder's LM head, though its EncoderDecoderModel means to; ours does, and equals the package's model
with that inverse added."""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file

import adapterkit
from adapterkit.interfaces.encoder_decoder import EncoderDecoderInterface

FX = Path(__file__).parent / "fixtures" / "adapters_ref_encdec"
MANIFEST = json.loads((FX / "manifest.json").read_text())
CASES = sorted(MANIFEST["cases"])


@functools.lru_cache(maxsize=None)
def _base():
    return transformers.EncoderDecoderModel.from_pretrained(FX / "base", attn_implementation="eager").eval()


def _logits(case: str, which: str = "expected"):
    return load_file(FX / case / f"{which}.safetensors")["logits"]


def _loaded(case: str, tmp_path=None):
    model = adapterkit.init(copy.deepcopy(_base()))
    name = model.load_adapter(str(FX / case), set_active=True)
    return model, name


def _composed(interface) -> bool:
    """Whether the interface is the named one composed from the sides (it names the package's per-side pools)."""
    return "prefix_encoder" in interface.adapterhub


def test_fixture_set_is_complete():
    assert CASES == sorted(["seq_bn", "double_seq_bn", "par_bn", "seq_bn_inv", "lora", "lora_qkv_ffn", "ia3",
                            "prefix_tuning"])


def test_the_named_interface_is_composed_from_the_sides():
    model = adapterkit.init(copy.deepcopy(_base()))
    interface = model.adapter_state.interface
    assert type(adapterkit.interfaces.get_interface("encoder-decoder")) is EncoderDecoderInterface
    assert interface.layers == ("encoder.encoder.layer", "decoder.bert.encoder.layer")
    assert interface.encoder_layers == "encoder.encoder.layer" and interface.lm_heads == ("decoder.cls",)
    assert interface.cross_attention == "crossattention.self?" and not interface.unresolved
    assert _composed(interface)


def test_base_model_matches():
    with torch.no_grad():
        torch.testing.assert_close(_base()(**load_file(FX / "inputs.safetensors")).logits, _logits("base"),
                                   atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", CASES)
def test_package_files_load_and_match(case):
    model, name = _loaded(case)
    which = "expected_corrected" if "corrected" in MANIFEST["cases"][case] else "expected"
    inputs = load_file(FX / "inputs.safetensors")
    with torch.no_grad():
        out = model(**inputs).logits
        with adapterkit.AdapterSetup(None):
            base = model(**inputs).logits
    assert (base - _logits(case)).abs().max() > 1e-3
    torch.testing.assert_close(out, _logits(case, which), atol=1e-5, rtol=0)
    if which == "expected_corrected":  # (and differs from the package's own output: the inverse matters)
        assert (out - _logits(case)).abs().max() > 1e-3


def test_mh_adapter_covers_the_cross_attention_as_the_package_does():
    model, name = _loaded("double_seq_bn")
    config = model.adapters_config[name]
    assert config.mh_adapter and config.cross_adapter
    assert any(".cross_adapter." in k for k in model.adapterkit[name].state_dict())
    # a new adapter keeps adapterkit's placement: no cross-attention adapter unless asked
    model.add_adapter("new", config="double_seq_bn")
    assert not any(".cross_adapter." in k for k in model.adapterkit["new"].state_dict())


@pytest.mark.parametrize("case", ["double_seq_bn", "prefix_tuning", "lora"])
def test_save_as_adapterhub_gives_the_package_names_back(case, tmp_path):
    model, name = _loaded(case)
    model.save_adapter(str(tmp_path / case), name, format="adapterhub")
    ours = load_file(tmp_path / case / "adapter.safetensors")
    theirs = load_file(FX / case / "adapter.safetensors")
    assert set(ours) <= set(theirs)  # (the package also writes each prefix pool's per-layer aliases)
    for key, tensor in ours.items():
        torch.testing.assert_close(tensor, theirs[key], atol=0, rtol=0)
    fresh = adapterkit.init(copy.deepcopy(_base()))
    fresh.load_adapter(str(tmp_path / case), set_active=True)
    inputs = load_file(FX / "inputs.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(fresh(**inputs).logits, _logits(case), atol=1e-5, rtol=0)


def test_a_cross_adapter_without_mh_adapter_has_no_adapterhub_form(tmp_path):
    model = adapterkit.init(copy.deepcopy(_base()))
    model.add_adapter("x", config=adapterkit.BnConfig(mh_adapter=False, output_adapter=False, cross_adapter=True,
                                                      reduction_factor=16))
    with pytest.raises(adapterkit.AdapterError, match="cross_adapter=True without mh_adapter"):
        model.save_adapter(str(tmp_path / "x"), "x", format="adapterhub")
    assert not (tmp_path / "x").exists()


def test_sides_with_different_layouts_fall_back_to_inference():
    encoder = transformers.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                      intermediate_size=48, vocab_size=50)
    decoder = transformers.GPT2Config(n_embd=32, n_layer=1, n_head=4, vocab_size=50, add_cross_attention=True,
                                      is_decoder=True)
    config = transformers.EncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id, config.pad_token_id = 1, 0
    model = adapterkit.init(transformers.EncoderDecoderModel(config).eval())
    interface = model.adapter_state.interface
    assert not _composed(interface) and len(interface.layers) == 2
    model.add_adapter("a", config="seq_bn")
    model.set_active_adapters("a")
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        assert model(input_ids=ids, decoder_input_ids=ids).logits.shape == (1, 3, 50)
    assert interface.lm_heads == ("decoder.lm_head",)  # (the head inside the decoder, not the whole decoder)


@pytest.mark.parametrize("case", ["prefix_tuning", "double_seq_bn", "seq_bn_inv"])
def test_generate_with_the_cache_equals_a_greedy_loop(case):
    model, _ = _loaded(case)
    inputs = load_file(FX / "inputs.safetensors")
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=4, do_sample=False, num_beams=1)
        dec = torch.full((ids.shape[0], 1), model.config.decoder_start_token_id)
        for _ in range(4):
            logits = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits[:, -1]
            dec = torch.cat([dec, logits.argmax(-1, keepdim=True)], 1)
    assert out.tolist() == dec.tolist()


def test_a_decoder_interface_without_cross_attention_falls_back_to_inference():
    side = transformers.GPT2Config(n_embd=32, n_layer=1, n_head=4, vocab_size=50)
    decoder = transformers.GPT2Config(n_embd=32, n_layer=1, n_head=4, vocab_size=50, add_cross_attention=True,
                                      is_decoder=True)
    config = transformers.EncoderDecoderConfig.from_encoder_decoder_configs(side, decoder)
    config.decoder_start_token_id, config.pad_token_id = 1, 0
    model = adapterkit.init(transformers.EncoderDecoderModel(config).eval())
    interface = model.adapter_state.interface  # (GPT-2's named interface has no cross-attention: inferred)
    assert not _composed(interface) and interface.cross_attention_projections
