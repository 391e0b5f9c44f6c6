#!/usr/bin/env python
"""Reference fixtures from the real `adapters` package for X-MOD (model type "xmod"), on a tiny X-MOD without
language adapters of its own (`languages=[]`: the layout of AdapterHub's xmod-base, whose language adapters are
AdapterHub adapters). The package deletes an X-MOD's own language adapters, so only there is its base model
transformers' X-MOD.

Run inside the reference venv (tools/make_reference_fixtures.sh):

    .venv-ref/bin/python tools/make_xmod_fixtures.py

It writes tests/fixtures/adapters_ref_xmod/ as make_encdec_fixtures.py does (the package's own files per case and
the expected last_hidden_state). The inputs hold no lang_ids: the package refuses them (it passes its own);
transformers' X-MOD without languages needs some, and any value selects no language adapter. The base's output is
the package's too (transformers 4.57's X-MOD fails without a language adapter; 5.x's adds none). Deterministic.
"""

from __future__ import annotations

import copy

import adapters
import torch
from adapters import PrefixTuningConfig
from transformers import XmodConfig, XmodModel

import fixture_common as fc
import make_arch_fixtures as archfx
import package_files_fixtures

OUT = fc.FIXTURES / "adapters_ref_xmod"
_XMOD = dict(archfx._BERTLIKE, intermediate_size=48, vocab_size=50, max_position_embeddings=40, pad_token_id=1,
             languages=[], default_language=None)
_NAMES = ("seq_bn", "double_seq_bn", "par_bn", "seq_bn_inv", "lora", "lora_qkv_ffn", "ia3")
CASES = [case for case in fc.ADAPTER_CASES if case[0] in _NAMES] + [
    ("prefix_tuning", PrefixTuningConfig, archfx.PREFIX)]


def build(state_dict=None) -> XmodModel:
    model = XmodModel(fc.eager_config(XmodConfig, **_XMOD), add_pooling_layer=False)
    if state_dict is not None:
        model.load_state_dict(state_dict, strict=True)
    else:  # layer norms that are not the identity map: X-MOD's FFN output is normed twice (LN(LN(.)) = LN(.) else)
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, torch.nn.LayerNorm):
                    module.weight.normal_(1.0, 0.3), module.bias.normal_(0.0, 0.3)
    return model.eval()


@torch.no_grad()
def forward(model, inputs) -> torch.Tensor:
    """The package's forward (transformers 4.57's X-MOD cannot run without a language adapter: the base too runs
    as the package's, on a copy)."""
    if not hasattr(model, "adapters_config"):
        model = copy.deepcopy(model)
        adapters.init(model)
    return model(**inputs).last_hidden_state.detach().clone().contiguous()


def main() -> None:
    ids, mask = fc.padded_ids(_XMOD["pad_token_id"], _XMOD["vocab_size"])
    package_files_fixtures.generate(OUT, "tools/make_xmod_fixtures.py", build,
                                    {"input_ids": ids, "attention_mask": mask}, forward, CASES, "last_hidden_state")


if __name__ == "__main__":
    main()
