#!/usr/bin/env python
"""Generate reference fixtures for more architectures from the real AdapterHub `adapters` package.

Run inside the reference venv (`.venv-ref`, adapters 1.3.0 / transformers 4.57.x; see make_reference_fixtures.sh):

    .venv-ref/bin/python tools/make_arch_fixtures.py

It writes tests/fixtures/adapters_ref_archs/:

  manifest.json                       versions, configs, seeds, and which cases `adapters` supports per arch
  <arch>/base/                        `save_pretrained` of the tiny base model (config.json, model.safetensors)
  <arch>/base/expected.safetensors    last_hidden_state of the base model (no adapter)
  <arch>/inputs.safetensors           input_ids + attention_mask (padded rows) or pixel_values
  <arch>/<case>/adapter_config.json   the `adapters` config .to_dict()
  <arch>/<case>/adapter.safetensors   all parameters of adapter <case>, full model.state_dict() key names
  <arch>/<case>/expected.safetensors  last_hidden_state with adapter <case> active (eval mode)

`adapters`' LoRAMergedLinear adds a random bias to DeBERTa's bias-free `in_proj` on `adapters.init` (the model's
output changes with no adapter at all); the generator removes it and checks the plain output is reproduced.
Cases `adapters` does not support for an architecture (an error on add_adapter, or no parameters added) are
listed in the manifest with the reason and get no directory. Deterministic; nothing is downloaded.
"""

from __future__ import annotations

import shutil

import adapters
import torch
from adapters import DoubleSeqBnConfig, PrefixTuningConfig
from safetensors.torch import save_file
from transformers import (BartConfig, BartModel, DebertaConfig, DebertaModel, DebertaV2Config, DebertaV2Model,
                          DistilBertConfig, DistilBertModel, GPT2Config, GPT2Model, LlamaConfig, LlamaModel, T5Config,
                          T5Model, ViTConfig, ViTModel)

import fixture_common as fc
from fixture_common import BATCH, INIT_STD, MIN_DIFF, PAD_TAIL, SEQ, forward, owner_type, write_json

OUT = fc.FIXTURES / "adapters_ref_archs"

H, LAYERS, HEADS, FF, VOCAB, POS = 32, 2, 4, 48, 50, 32

# initializer_range 0.2 (not 0.02): at 0.02 a 32-wide model is almost the identity and attention-path bugs hide.
_BERTLIKE = dict(hidden_size=H, num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=FF,
                 vocab_size=VOCAB, max_position_embeddings=POS, hidden_dropout_prob=0.0,
                 attention_probs_dropout_prob=0.0, initializer_range=0.2)
_DEBERTA = dict(_BERTLIKE, relative_attention=True, pos_att_type=["c2p", "p2c"], max_relative_positions=8)

ARCHS = {
    "distilbert": dict(config_cls=DistilBertConfig, model_cls=DistilBertModel, kind="text", model_kwargs={},
                       config=dict(dim=H, hidden_dim=FF, n_layers=LAYERS, n_heads=HEADS, vocab_size=VOCAB,
                                   max_position_embeddings=POS, dropout=0.0, attention_dropout=0.0,
                                   initializer_range=0.2, pad_token_id=0)),
    "deberta": dict(config_cls=DebertaConfig, model_cls=DebertaModel, kind="text", model_kwargs={},
                    config=dict(_DEBERTA, pad_token_id=0)),
    "deberta-v2": dict(config_cls=DebertaV2Config, model_cls=DebertaV2Model, kind="text", model_kwargs={},
                       config=dict(_DEBERTA, pad_token_id=0, position_biased_input=False)),
    "vit": dict(config_cls=ViTConfig, model_cls=ViTModel, kind="image", model_kwargs={"add_pooling_layer": False},
                config=dict(hidden_size=H, num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=FF,
                            image_size=8, patch_size=4, num_channels=3, hidden_dropout_prob=0.0,
                            attention_probs_dropout_prob=0.0, initializer_range=0.2)),
    "gpt2": dict(config_cls=GPT2Config, model_cls=GPT2Model, kind="text", model_kwargs={},
                 config=dict(n_embd=H, n_layer=LAYERS, n_head=HEADS, n_inner=FF, vocab_size=VOCAB, n_positions=POS,
                             resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, initializer_range=0.2,
                             bos_token_id=1, eos_token_id=1, pad_token_id=0)),
    # pre-LN decoder with grouped-query attention (2 key/value heads) and a gated FFN; the `adapters` package
    # puts its "intermediate" LoRA on down_proj (adapterkit: up + gate), so its FFN cases are refused on import
    "llama": dict(config_cls=LlamaConfig, model_cls=LlamaModel, kind="text", model_kwargs={},
                  config=dict(hidden_size=H, intermediate_size=FF, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                              num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=POS,
                              initializer_range=0.2, attention_dropout=0.0, pad_token_id=0, bos_token_id=1,
                              eos_token_id=1, tie_word_embeddings=False)),
    # encoder-decoder models, narrower (16) to keep the fixtures small; a subset of the cases (SEQ2SEQ_CASES)
    "bart": dict(config_cls=BartConfig, model_cls=BartModel, kind="seq2seq", model_kwargs={},
                 config=dict(d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                             decoder_attention_heads=2, encoder_ffn_dim=24, decoder_ffn_dim=24, vocab_size=VOCAB,
                             max_position_embeddings=POS, dropout=0.0, attention_dropout=0.0,
                             activation_dropout=0.0, init_std=0.2, pad_token_id=0, bos_token_id=1,
                             eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=None)),
    "t5": dict(config_cls=T5Config, model_cls=T5Model, kind="seq2seq", model_kwargs={},
               config=dict(d_model=16, d_kv=8, d_ff=24, num_layers=2, num_decoder_layers=2, num_heads=2,
                           vocab_size=VOCAB, dropout_rate=0.0, initializer_factor=1.0, pad_token_id=0,
                           eos_token_id=1, decoder_start_token_id=0)),
}

# (case name, config class, kwargs); the index seeds the randomisation: torch.manual_seed(1234 + index)
PREFIX = {"prefix_length": 4, "bottleneck_size": 8}
CASES = fc.ADAPTER_CASES + [
    ("double_seq_bn_cross", DoubleSeqBnConfig, {"cross_adapter": True, "reduction_factor": 4}),
    # encoder-decoder models: one prefix MLP per attention kind (encoder, decoder self, cross)
    ("prefix_tuning", PrefixTuningConfig, PREFIX),
    ("prefix_tuning_gated", PrefixTuningConfig, {**PREFIX, "use_gating": True, "shared_gating": False}),
    ("prefix_tuning_dec_self", PrefixTuningConfig, {**PREFIX, "encoder_prefix": False, "cross_prefix": False}),
]
SEQ2SEQ_CASES = {"seq_bn", "double_seq_bn", "par_bn", "seq_bn_inv", "lora_qkv_ffn", "ia3", "double_seq_bn_cross",
                 "prefix_tuning", "prefix_tuning_gated", "prefix_tuning_dec_self"}
SEQ2SEQ_ONLY = {"double_seq_bn_cross", "prefix_tuning_dec_self"}


def generated_for(kind: str, case: str) -> bool:
    """Encoder-decoder models get SEQ2SEQ_CASES; the cross-attention cases only they have."""
    return case in SEQ2SEQ_CASES if kind == "seq2seq" else case not in SEQ2SEQ_ONLY


def build_spec(spec: dict, state_dict=None):
    """The tiny model of an ARCHS entry (eager attention, eval mode), with `state_dict` loaded if given."""
    model = spec["model_cls"](fc.eager_config(spec["config_cls"], **spec["config"]), **spec["model_kwargs"])
    if state_dict is not None:
        model.load_state_dict(state_dict, strict=True)
    return model.eval()


def build(arch: str, state_dict=None):
    return build_spec(ARCHS[arch], state_dict)


def make_inputs(kind: str, cfg) -> dict:
    """Seeded inputs: pixel_values (image), padded input_ids + attention_mask (text), plus decoder_input_ids
    (seq2seq); audio (Whisper): input_features of the encoder's fixed length and decoder_input_ids."""
    g = torch.Generator().manual_seed(42)
    if kind == "image":
        return {"pixel_values": torch.randn(BATCH, cfg.num_channels, cfg.image_size, cfg.image_size, generator=g)}
    if kind == "audio":
        feats = torch.randn(BATCH, cfg.num_mel_bins, 2 * cfg.max_source_positions, generator=g)
        return {"input_features": feats,
                "decoder_input_ids": torch.randint(3, cfg.vocab_size, (BATCH, 5), generator=g, dtype=torch.int64)}
    ids, mask = fc.padded_ids(cfg.pad_token_id, cfg.vocab_size, g)
    out = {"input_ids": ids, "attention_mask": mask}
    if kind == "seq2seq":
        out["decoder_input_ids"] = torch.randint(3, cfg.vocab_size, (BATCH, 5), generator=g, dtype=torch.int64)
    return out


def drop_spurious_biases(model, base_keys) -> list[str]:
    """`adapters`' LoRAMergedLinear.wrap gives a bias-free projection (DeBERTa's `in_proj`) a randomly initialised
    bias, so even with no adapter the model's output changes. Remove such biases (the reference's defect, not a
    part of its adapter math) and return their names."""
    dropped = []
    for name, module in model.named_modules():
        if getattr(module, "bias", None) is not None and f"{name}.bias" not in base_keys \
                and f"{name}.weight" in base_keys:
            module.bias = None
            dropped.append(name)
    return dropped


def is_scale_param(key: str, config) -> bool:
    """(IA)^3 vectors and learned bottleneck `scaling` scalars are randomised around 1."""
    return key.endswith(".scaling") or (key.endswith(".lora_B") and getattr(config, "composition_mode", "") == "scale")


def _unsupported(arch: str, name: str, exc: Exception) -> str:
    """The manifest's reason for a case `adapters` cannot do: the exception, shortened."""
    reason = f"{type(exc).__name__}: {str(exc).split('(')[0]}... {str(exc).split(')')[-1].strip()}"
    print(f"-- {arch}/{name}: unsupported ({reason})")
    return reason


def main() -> None:
    generate(OUT, ARCHS, CASES, generated_for, "tools/make_arch_fixtures.py", 1.75 * 1024 * 1024)


def generate(out_dir, archs: dict, cases: list, wanted, generator: str, max_bytes: float) -> None:
    """Write one fixture directory (layout in the module docstring): per arch in `archs` the base, its inputs and
    each case of `cases` that `wanted(kind, case)` selects, or the reason `adapters` cannot do it."""
    fc.deterministic()
    if out_dir.exists():
        shutil.rmtree(out_dir)
    manifest = {
        "generator": generator,
        "versions": fc.versions(),
        "inputs": {"batch": BATCH, "seq": SEQ, "padded_tail_per_row": PAD_TAIL, "seed": 42},
        "randomisation": {"seed": "torch.manual_seed(1234 + case_index), params in state_dict order",
                          "default": f"normal(0, {INIT_STD})",
                          "scale_params": f"1 + normal(0, {INIT_STD}) ((IA)^3 vectors, learned scaling)"},
        "min_abs_diff_vs_base": MIN_DIFF,
        "archs": {},
    }
    for arch, spec in archs.items():
        torch.manual_seed(0)
        base = build_spec(spec)
        base_sd = fc.detached(base.state_dict())
        arch_dir = out_dir / arch
        base.save_pretrained(arch_dir / "base", safe_serialization=True)
        inputs = make_inputs(spec["kind"], base.config)
        save_file(inputs, str(arch_dir / "inputs.safetensors"))
        base_out = forward(base, inputs)
        save_file({"last_hidden_state": base_out}, str(arch_dir / "base" / "expected.safetensors"))
        entry = {"model_class": spec["model_cls"].__name__, "config": spec["config"], "kind": spec["kind"],
                 "model_kwargs": spec["model_kwargs"], "cases": {}, "unsupported": {}}
        print(f"== {arch}")
        for index, (name, cfg_cls, kwargs) in enumerate(cases):
            if not wanted(spec["kind"], name):
                continue  # kept out for size (not a reference limitation)
            adapter_cfg = cfg_cls(**kwargs)
            model = build_spec(spec, base_sd)
            adapters.init(model)
            dropped = drop_spurious_biases(model, base_sd)
            if dropped:
                entry["spurious_biases_removed"] = dropped
            # GPT-J: `adapters` rewrites its attention in another op order (~1e-6 float noise)
            assert (forward(model, inputs) - base_out).abs().max().item() < 1e-5, f"{arch}: adapters.init changes output"
            before = set(model.state_dict())
            try:
                model.add_adapter(name, config=adapter_cfg)
            except Exception as exc:  # noqa: BLE001 - recorded: `adapters` does not support this case here
                entry["unsupported"][name] = _unsupported(arch, name, exc)
                continue
            model.set_active_adapters(name)
            model.eval()
            # one name per tensor (a prefix pool is also registered inside every layer): the pool-level one
            new_keys = [canonical for canonical, _ in fc.group_new_tensors(model, before)]
            if not new_keys:
                entry["unsupported"][name] = "add_adapter added no parameters"
                continue
            params = dict(model.named_parameters(remove_duplicate=False))
            fc.randomise(params, new_keys, 1234 + index, lambda k: is_scale_param(k, adapter_cfg))
            try:
                out = forward(model, inputs)
            except Exception as exc:  # noqa: BLE001 - recorded: the package fails in its forward here (Phi par_bn)
                entry["unsupported"][name] = "forward fails: " + _unsupported(arch, name, exc)
                continue
            diff = (out - base_out).abs().max().item()
            if diff <= MIN_DIFF:
                entry["unsupported"][name] = f"the adapter does not change the output (max diff {diff:.2e})"
                print(f"-- {arch}/{name}: no effect ({diff:.2e})")
                continue
            model.set_active_adapters(None)
            off = (forward(model, inputs) - base_out).abs().max().item()
            assert off < 1e-5, f"{arch}/{name}: the inactive adapter changes the output ({off})"
            case_dir = arch_dir / name
            write_json(case_dir / "adapter_config.json", adapter_cfg.to_dict())
            save_file(fc.detached(model.state_dict(), new_keys), str(case_dir / "adapter.safetensors"))
            save_file({"last_hidden_state": out}, str(case_dir / "expected.safetensors"))
            entry["cases"][name] = {"seed": 1234 + index, "config_class": cfg_cls.__name__, "config_kwargs": kwargs,
                                    "max_abs_diff_vs_base": diff,
                                    "params": {k: [list(params[k].shape), owner_type(model, k)] for k in new_keys}}
            print(f"-- {arch}/{name}: max|adapter-base|={diff:.4f}, {len(new_keys)} tensors")
        manifest["archs"][arch] = entry
    fc.finish(out_dir, manifest, max_bytes, f"fixtures exceed {max_bytes / 2**20:.2f} MB")


if __name__ == "__main__":
    main()
