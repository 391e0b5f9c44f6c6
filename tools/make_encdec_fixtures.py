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

import torch
from adapters import PrefixTuningConfig
from transformers import BertConfig, EncoderDecoderConfig, EncoderDecoderModel

import fixture_common as fc
import make_arch_fixtures as archfx
import package_files_fixtures

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


def _inverse_before_the_lm_head(model, adapter_cfg):
    """The package's intent, which its plain LM heads skip: its model with the inverse run before decoder.cls."""
    if not adapter_cfg.get("inv_adapter"):
        return None
    handle = model.decoder.cls.register_forward_pre_hook(
        lambda module, args: (model.encoder.invertible_adapters_forward(args[0], rev=True),) + args[1:])
    out = forward(model, INPUTS)
    handle.remove()
    return ("the package's EncoderDecoderModel means to invert the invertible adapter before the decoder's LM head "
            "(its decoder_invertible_adapters_forward), but only its flexible heads call that; expected_corrected: "
            "its model with the inverse run before decoder.cls"), out


def _inputs() -> dict:
    g = torch.Generator().manual_seed(42)
    ids, mask = fc.padded_ids(0, _BERT["vocab_size"], g)
    return {"input_ids": ids, "attention_mask": mask,
            "decoder_input_ids": torch.randint(3, _BERT["vocab_size"], (fc.BATCH, 5), generator=g)}


INPUTS = _inputs()


def main() -> None:
    package_files_fixtures.generate(OUT, "tools/make_encdec_fixtures.py", build, INPUTS, forward, CASES, "logits",
                                    corrected=_inverse_before_the_lm_head)


if __name__ == "__main__":
    main()
