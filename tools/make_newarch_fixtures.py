#!/usr/bin/env python
"""Reference fixtures from the real `adapters` package for the architectures of issue 17: ALBERT, BEiT,
BertGeneration, CLIP (text and vision towers), GPT-J, MBart, mT5, PLBart and Whisper (built into `adapters` 1.3.0),
Gemma 2, Gemma 3 (text), Qwen3 and Phi (its plugin interface, `adapters.wrappers.interfaces`, which `adapters.init`
picks by model type).

Run inside the reference venv (tools/make_reference_fixtures.sh):

    .venv-ref/bin/python tools/make_newarch_fixtures.py

It writes tests/fixtures/adapters_ref_newarchs/ in make_arch_fixtures.py's layout (and with its code): per arch the
tiny base (`save_pretrained`), its inputs and per case the adapter config, its weights and the expected
last_hidden_state; cases the package cannot do (prefix tuning through the plugin interface) are listed in the
manifest with the reason. Where the package computes another function than the method (CORRECTED: a defect in
its ALBERT, GPT-J, Phi or Gemma wiring), the case also gets expected_corrected.safetensors: the package's own
model with that one defect undone. Deterministic; nothing is downloaded.
"""

from __future__ import annotations

import functools
import json

import adapters
from adapters import PrefixTuningConfig
from adapters.context import ForwardContext
from adapters.methods.bottleneck import hook_fn
from safetensors.torch import load_file, save_file
from transformers import (AlbertConfig, AlbertModel, BeitConfig, BeitModel, BertGenerationConfig,
                          BertGenerationEncoder, CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModel,
                          Gemma2Config, Gemma2Model, Gemma3TextConfig, Gemma3TextModel, GPTJConfig, GPTJModel,
                          MBartConfig, MBartModel, MT5Config, MT5Model, PhiConfig, PhiModel, PLBartConfig, PLBartModel,
                          Qwen3Config, Qwen3Model, WhisperConfig, WhisperModel)

import fixture_common as fc
import make_arch_fixtures as archfx

OUT = fc.FIXTURES / "adapters_ref_newarchs"

H, LAYERS, HEADS, FF, VOCAB, POS = 32, 2, 4, 48, 50, 32
_TOKENS = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2)
_BERTLIKE = dict(archfx._BERTLIKE, intermediate_size=FF, vocab_size=VOCAB, max_position_embeddings=POS)
# decoders: grouped-query attention (2 key/value heads), head_dim 8, untied embeddings
_DECODER = dict(hidden_size=H, intermediate_size=FF, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                num_key_value_heads=2, head_dim=8, vocab_size=VOCAB, max_position_embeddings=POS,
                initializer_range=0.2, attention_dropout=0.0, tie_word_embeddings=False, **_TOKENS)
# Gemma: both layer kinds (sliding window 4 < sequence 7, then full), soft-capped attention logits
_GEMMA = dict(_DECODER, query_pre_attn_scalar=8, sliding_window=4, attn_logit_softcapping=50.0,
              layer_types=["sliding_attention", "full_attention"])
_BART = dict(d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
             encoder_ffn_dim=24, decoder_ffn_dim=24, vocab_size=VOCAB, max_position_embeddings=POS, dropout=0.0,
             attention_dropout=0.0, activation_dropout=0.0, init_std=0.2, decoder_start_token_id=2,
             forced_eos_token_id=None, **_TOKENS)
_VISION = dict(hidden_size=H, num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=FF,
               image_size=8, patch_size=4, num_channels=3)


def _arch(config_cls, model_cls, kind, config, **model_kwargs):
    return dict(config_cls=config_cls, model_cls=model_cls, kind=kind, config=config, model_kwargs=model_kwargs)


ARCHS = {
    "albert": _arch(AlbertConfig, AlbertModel, "text", dict(_BERTLIKE, embedding_size=16, pad_token_id=0),
                    add_pooling_layer=False),
    "bert-generation": _arch(BertGenerationConfig, BertGenerationEncoder, "text", dict(_BERTLIKE, **_TOKENS)),
    "gptj": _arch(GPTJConfig, GPTJModel, "text",
                  dict(n_embd=H, n_layer=LAYERS, n_head=HEADS, n_inner=FF, rotary_dim=4, vocab_size=VOCAB,
                       n_positions=POS, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, initializer_range=0.2,
                       tie_word_embeddings=False, **_TOKENS)),
    "gemma2": _arch(Gemma2Config, Gemma2Model, "text", _GEMMA),
    "gemma3_text": _arch(Gemma3TextConfig, Gemma3TextModel, "text", _GEMMA),
    "qwen3": _arch(Qwen3Config, Qwen3Model, "text", _DECODER),
    "phi": _arch(PhiConfig, PhiModel, "text",
                 dict(hidden_size=H, intermediate_size=FF, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                      vocab_size=VOCAB, max_position_embeddings=POS, partial_rotary_factor=0.5, resid_pdrop=0.0,
                      embd_pdrop=0.0, attention_dropout=0.0, initializer_range=0.2, tie_word_embeddings=False,
                      **_TOKENS)),
    "beit": _arch(BeitConfig, BeitModel, "image",
                  dict(_VISION, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, initializer_range=0.2,
                       use_relative_position_bias=True), add_pooling_layer=False),
    "clip_text": _arch(CLIPTextConfig, CLIPTextModel, "text",
                       dict(hidden_size=H, intermediate_size=FF, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                            vocab_size=VOCAB, max_position_embeddings=POS, attention_dropout=0.0,
                            initializer_factor=2.0, **_TOKENS)),
    "clip_vision": _arch(CLIPVisionConfig, CLIPVisionModel, "image",
                         dict(_VISION, attention_dropout=0.0, initializer_factor=2.0)),
    "mbart": _arch(MBartConfig, MBartModel, "seq2seq", _BART),
    "plbart": _arch(PLBartConfig, PLBartModel, "seq2seq", _BART),
    "mt5": _arch(MT5Config, MT5Model, "seq2seq",
                 dict(d_model=16, d_kv=8, d_ff=24, num_layers=2, num_decoder_layers=2, num_heads=2, vocab_size=VOCAB,
                      dropout_rate=0.0, initializer_factor=1.0, pad_token_id=0, eos_token_id=1,
                      decoder_start_token_id=0, tie_word_embeddings=False)),
    "whisper": _arch(WhisperConfig, WhisperModel, "audio",
                     dict(d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                          decoder_attention_heads=2, encoder_ffn_dim=24, decoder_ffn_dim=24, vocab_size=VOCAB,
                          num_mel_bins=8, max_source_positions=8, max_target_positions=16, dropout=0.0,
                          attention_dropout=0.0, activation_dropout=0.0, init_std=0.2, decoder_start_token_id=1,
                          suppress_tokens=None, begin_suppress_tokens=None, **_TOKENS)),
}

# the methods of issue 17 (FFN LoRA: lora_qkv_ffn); the index seeds the randomisation: torch.manual_seed(1234 + i)
_NAMES = ("seq_bn", "double_seq_bn", "par_bn", "lora", "lora_qkv_ffn", "ia3")
CASES = [case for case in fc.ADAPTER_CASES if case[0] in _NAMES] + [
    ("prefix_tuning", PrefixTuningConfig, archfx.PREFIX)]


# Cases where the package computes something else than the method: each defect, and the change that undoes it.
# The generator runs the package's model once more with that change (expected_corrected.safetensors); the tests
# check that adapterkit equals that, and differs from the package's own output.
def _swap_attention_site(model) -> None:
    """ALBERT: the package calls its attention site as (attention input, attention output) instead of
    (output, input), so the adapter runs on the layer input."""
    for layer in model.encoder.albert_layer_groups[0].albert_layers:
        site = layer.attention.attention_adapters
        site.forward = functools.partial(lambda h, r, ln, orig: orig(r, h, ln), orig=site.forward)


def _block_input_as_ffn_residual(model) -> None:
    """GPT-J: the package's FFN site takes x + attention (+ its adapter) as residual, though the FFN runs on
    LN(x) beside the attention; undone: residual x, the attention part added back after the site."""
    for block in model.h:
        seen = {}
        block.register_forward_pre_hook(functools.partial(_keep_input, seen=seen), with_kwargs=True)
        site = block.output_adapters
        site.forward = functools.partial(lambda f, hs, ln, orig, seen: orig(f, seen["x"], ln) + (hs - seen["x"]),
                                         orig=site.forward, seen=seen)


def _keep_input(module, args, kwargs, seen):
    seen["x"] = args[0] if args else kwargs["hidden_states"]


def _layer_input_as_ffn_residual(model) -> None:
    """Phi (plugin): the package's interface names no pre-FFN hook for Phi, so its FFN site gets no residual
    (Pfeiffer runs on the FFN output alone, the parallel adapter crashes); undone: the layer input x."""
    for layer in model.layers:
        layer.input_layernorm.register_forward_pre_hook(
            lambda module, args: setattr(ForwardContext.get_context(), "output_adapter_residual_input", args[0]))


def _sites_after_post_norms(model) -> None:
    """Gemma 2/3 (plugin): the package hooks o_proj / down_proj and passes the post-attention / post-feedforward
    norms as post-LN norms, so they normalise h + x before the adapter and the layer normalises again; undone:
    the sites on those norms' outputs (where the layer adds h to x), no norm passed."""
    for layer in model.layers:
        for proj, norm, site in ((layer.self_attn.o_proj, layer.post_attention_layernorm, layer.attention_adapters),
                                 (layer.mlp.down_proj, layer.post_feedforward_layernorm, layer.output_adapters)):
            for key, hook in list(proj._forward_hooks.items()):
                if isinstance(hook, functools.partial) and hook.func is hook_fn:
                    del proj._forward_hooks[key]
            norm.register_forward_hook(functools.partial(hook_fn, site, None))


CORRECTED = {("albert", "double_seq_bn"): _swap_attention_site,
             ("gptj", "seq_bn"): _block_input_as_ffn_residual, ("gptj", "par_bn"): _block_input_as_ffn_residual,
             ("phi", "seq_bn"): _layer_input_as_ffn_residual, ("phi", "par_bn"): _layer_input_as_ffn_residual,
             **{(arch, case): _sites_after_post_norms for arch in ("gemma2", "gemma3_text")
                for case in ("seq_bn", "double_seq_bn", "par_bn")}}


def corrected(arch: str, case: str, fix) -> dict:
    """The package's model for a case with `fix` applied: writes <case>/expected_corrected.safetensors, returns the
    manifest entry. A generated case reloads its saved weights; one whose package forward fails (Phi's par_bn)
    gets its weights here, randomised as generate() does, and no expected.safetensors."""
    directory, index = OUT / arch, [c[0] for c in CASES].index(case)
    model = archfx.build_spec(ARCHS[arch], load_file(str(directory / "base" / "model.safetensors")))
    adapters.init(model)
    before = set(model.state_dict())
    config = CASES[index][1](**CASES[index][2])
    model.add_adapter(case, config=config)
    model.set_active_adapters(case)
    model.eval()
    inputs = load_file(str(directory / "inputs.safetensors"))
    generated = (directory / case).exists()
    if generated:
        model.load_state_dict(load_file(str(directory / case / "adapter.safetensors")), strict=False)
        expected = load_file(str(directory / case / "expected.safetensors"))["last_hidden_state"]
        assert (fc.forward(model, inputs) - expected).abs().max().item() < 1e-6, f"{arch}/{case}: reload differs"
    else:
        keys = [canonical for canonical, _ in fc.group_new_tensors(model, before)]
        fc.randomise(dict(model.named_parameters()), keys, 1234 + index, lambda k: archfx.is_scale_param(k, config))
        fc.write_json(directory / case / "adapter_config.json", config.to_dict())
        save_file(fc.detached(model.state_dict(), keys), str(directory / case / "adapter.safetensors"))
    fix(model)
    out = fc.forward(model, inputs)
    save_file({"last_hidden_state": out}, str(directory / case / "expected_corrected.safetensors"))
    entry = {"defect": fix.__doc__.split(";")[0].strip(), "undone": fix.__doc__.split("undone: ")[-1].strip()}
    if generated:
        entry["max_abs_diff_vs_package"] = (out - expected).abs().max().item()
    print(f"-- {arch}/{case}: defect undone, {entry.get('max_abs_diff_vs_package', 'the package fails')}")
    return entry


def main() -> None:
    archfx.generate(OUT, ARCHS, CASES, lambda kind, case: True, "tools/make_newarch_fixtures.py", 2.5 * 1024 * 1024)
    manifest = json.loads((OUT / "manifest.json").read_text())
    for (arch, case), fix in CORRECTED.items():
        manifest["archs"][arch].setdefault("corrected", {})[case] = corrected(arch, case, fix)
    fc.write_json(OUT / "manifest.json", manifest)


if __name__ == "__main__":
    main()
