#!/usr/bin/env python
"""Reference fixtures from the real `adapters` package for transformers' EncoderDecoderModel (model type
"encoder-decoder"): a tiny BERT encoder and a BERT decoder with cross-attention (bert2bert), as the package
builds it (each side its own adapter-initialised model, layers numbered per side).

Run inside the reference venv (tools/make_reference_fixtures.sh):

    .venv-ref/bin/python tools/make_encdec_fixtures.py

It writes tests/fixtures/adapters_ref_encdec/: the tiny base (`save_pretrained`), its inputs (padded input_ids,
attention_mask, decoder_input_ids) and per case the package's files as its `save_adapter` writes them
(adapter_config.json, adapter_model.safetensors) and the expected logits. Deterministic; nothing is downloaded.
"""

from __future__ import annotations

import shutil

import adapters
import torch
from adapters import PrefixTuningConfig
from safetensors.torch import save_file
from transformers import BertConfig, EncoderDecoderConfig, EncoderDecoderModel

import fixture_common as fc
import make_arch_fixtures as archfx

OUT = fc.FIXTURES / "adapters_ref_encdec"
_BERT = dict(archfx._BERTLIKE, intermediate_size=48, vocab_size=50, max_position_embeddings=32, pad_token_id=0)
_NAMES = ("seq_bn", "double_seq_bn", "par_bn", "seq_bn_inv", "lora", "lora_qkv_ffn", "ia3")
CASES = [case for case in fc.ADAPTER_CASES if case[0] in _NAMES] + [
    ("prefix_tuning", PrefixTuningConfig, archfx.PREFIX)]


def build(state_dict=None) -> EncoderDecoderModel:
    encoder = fc.eager_config(BertConfig, **_BERT)
    decoder = fc.eager_config(BertConfig, **_BERT, is_decoder=True, add_cross_attention=True)
    config = EncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id, config.pad_token_id = 2, 0
    config._attn_implementation = "eager"
    model = EncoderDecoderModel(config)
    if state_dict is not None:
        model.load_state_dict(state_dict, strict=True)
    return model.eval()


@torch.no_grad()
def forward(model, inputs) -> torch.Tensor:
    return model(**inputs).logits.detach().clone().contiguous()


def main() -> None:
    fc.deterministic()
    shutil.rmtree(OUT, ignore_errors=True)
    torch.manual_seed(0)
    base = build()
    base_sd = fc.detached(base.state_dict())
    base.save_pretrained(OUT / "base", safe_serialization=True)
    g = torch.Generator().manual_seed(42)
    ids, mask = fc.padded_ids(0, _BERT["vocab_size"], g)
    inputs = {"input_ids": ids, "attention_mask": mask,
              "decoder_input_ids": torch.randint(3, _BERT["vocab_size"], (fc.BATCH, 5), generator=g)}
    save_file(inputs, str(OUT / "inputs.safetensors"))
    base_out = forward(base, inputs)
    save_file({"logits": base_out}, str(OUT / "base" / "expected.safetensors"))
    manifest = {"generator": "tools/make_encdec_fixtures.py", "versions": fc.versions(),
                "inputs": {"batch": fc.BATCH, "seq": fc.SEQ, "padded_tail_per_row": fc.PAD_TAIL, "seed": 42},
                "randomisation": {"seed": "torch.manual_seed(1234 + case_index), params in state_dict order",
                                  "default": f"normal(0, {fc.INIT_STD})",
                                  "scale_params": f"1 + normal(0, {fc.INIT_STD})"},
                "cases": {}}
    for index, (name, cfg_cls, kwargs) in enumerate(CASES):
        adapter_cfg = cfg_cls(**kwargs)
        model = build(base_sd)
        adapters.init(model)
        assert (forward(model, inputs) - base_out).abs().max().item() < 1e-5, "adapters.init changes the output"
        before = set(model.state_dict())
        model.add_adapter(name, config=adapter_cfg)
        model.set_active_adapters(name)
        model.eval()
        new_keys = [canonical for canonical, _ in fc.group_new_tensors(model, before)]
        params = dict(model.named_parameters(remove_duplicate=False))
        fc.randomise(params, new_keys, 1234 + index, lambda k: archfx.is_scale_param(k, adapter_cfg))
        out = forward(model, inputs)
        diff = (out - base_out).abs().max().item()
        assert diff > fc.MIN_DIFF, f"{name}: the adapter does not change the output ({diff})"
        manifest["cases"][name] = {"seed": 1234 + index, "config_class": cfg_cls.__name__, "config_kwargs": kwargs,
                                   "max_abs_diff_vs_base": diff, "params": len(new_keys)}
        try:
            model.save_adapter(str(OUT / name), name, use_safetensors=True)  # the package's own files
        except RuntimeError as exc:  # its invertible adapter under three names (shared memory): safetensors refuses
            model.save_adapter(str(OUT / name), name)  # its default .bin, whose tensors then go to safetensors
            saved = torch.load(OUT / name / "pytorch_adapter.bin", weights_only=True)
            (OUT / name / "pytorch_adapter.bin").unlink()
            save_file({k: v.clone().contiguous() for k, v in saved.items()}, str(OUT / name / "adapter.safetensors"))
            manifest["cases"][name]["saved_as"] = ("the package's pytorch_adapter.bin, converted (its safetensors "
                                                   f"save fails: {str(exc).split(':')[0].strip()})")
        save_file({"logits": out}, str(OUT / name / "expected.safetensors"))
        if adapter_cfg.get("inv_adapter"):  # the package's intent, which its plain LM heads skip: corrected
            handle = model.decoder.cls.register_forward_pre_hook(
                lambda module, args: (model.encoder.invertible_adapters_forward(args[0], rev=True),) + args[1:])
            save_file({"logits": forward(model, inputs)}, str(OUT / name / "expected_corrected.safetensors"))
            handle.remove()
            manifest["cases"][name]["corrected"] = (
                "the package's EncoderDecoderModel means to invert the invertible adapter before the decoder's LM "
                "head (its decoder_invertible_adapters_forward), but only its flexible heads call that; "
                "expected_corrected: its model with the inverse run before decoder.cls")
        print(f"-- {name}: max|adapter-base|={diff:.4f}, {len(new_keys)} tensors")
    fc.finish(OUT, manifest, 1.0 * 1024 * 1024, "fixtures exceed 1 MB")


if __name__ == "__main__":
    main()
