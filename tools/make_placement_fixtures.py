#!/usr/bin/env python
"""Reference fixtures for the adapters the `adapters` package places differently from adapterkit: LoRA and (IA)^3 on
Llama's FFN (the package: "intermediate" on down_proj, "output" on up_proj) and on gated T5's FFN ("intermediate"
on wi_1 alone). adapterkit loads them keeping the package's placement (module-targeted, methods/lora/adapterhub.py
`relocate`).

Run inside the reference venv: `.venv-ref/bin/python tools/make_placement_fixtures.py`. It writes
tests/fixtures/adapters_ref_placement/<arch>/base/ (the tiny base model), inputs.safetensors, and per case a
directory the package's own `save_adapter` wrote, plus expected.safetensors (last_hidden_state, adapter active).
Deterministic; nothing is downloaded.
"""

from __future__ import annotations

import shutil

import adapters
import torch
from adapters import IA3Config, LoRAConfig
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaModel, T5Config, T5Model

import fixture_common as fc
from fixture_common import BATCH, MIN_DIFF, forward, write_json

OUT = fc.FIXTURES / "adapters_ref_placement"
ARCHS = {
    "llama": (LlamaConfig, LlamaModel, dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                            num_attention_heads=4, num_key_value_heads=2, vocab_size=50,
                                            max_position_embeddings=32, initializer_range=0.2, pad_token_id=0,
                                            bos_token_id=1, eos_token_id=1, tie_word_embeddings=False)),
    "t5-gated": (T5Config, T5Model, dict(d_model=16, d_kv=8, d_ff=24, num_layers=2, num_decoder_layers=2, num_heads=2,
                                         vocab_size=50, dropout_rate=0.0, initializer_factor=1.0, pad_token_id=0,
                                         eos_token_id=1, decoder_start_token_id=0, feed_forward_proj="gated-gelu")),
}
CASES = [
    ("lora_ffn", LoRAConfig, {"r": 4, "alpha": 8, "intermediate_lora": True, "output_lora": True}),
    ("ia3", IA3Config, {}),
]


def main() -> None:
    fc.deterministic()
    if OUT.exists():
        shutil.rmtree(OUT)
    manifest = {"generator": "tools/make_placement_fixtures.py", "versions": fc.versions(), "archs": {}}
    for arch, (config_cls, model_cls, kwargs) in ARCHS.items():
        torch.manual_seed(0)
        base = model_cls(fc.eager_config(config_cls, **kwargs)).eval()
        base.save_pretrained(OUT / arch / "base", safe_serialization=True)
        g = torch.Generator().manual_seed(42)
        ids, mask = fc.padded_ids(base.config.pad_token_id, base.config.vocab_size, g)
        inputs = {"input_ids": ids, "attention_mask": mask}
        if arch.startswith("t5"):
            inputs["decoder_input_ids"] = torch.randint(3, base.config.vocab_size, (BATCH, 5), generator=g)
        save_file(inputs, str(OUT / arch / "inputs.safetensors"))
        base_out = forward(base, inputs)
        entry = manifest["archs"][arch] = {"model_class": model_cls.__name__, "config": kwargs, "cases": {}}
        for index, (name, cfg_cls, cfg_kwargs) in enumerate(CASES):
            model = model_cls.from_pretrained(OUT / arch / "base", attn_implementation="eager").eval()
            adapters.init(model)
            before = set(model.state_dict())
            model.add_adapter(name, config=cfg_cls(**cfg_kwargs))
            model.set_active_adapters(name)
            model.eval()
            new_keys = [canonical for canonical, _ in fc.group_new_tensors(model, before)]
            params = dict(model.named_parameters(remove_duplicate=False))
            fc.randomise(params, new_keys, 3456 + index, lambda k: cfg_cls is IA3Config)
            out = forward(model, inputs)
            diff = (out - base_out).abs().max().item()
            assert diff > MIN_DIFF, f"{arch}/{name}: no effect ({diff})"
            model.save_adapter(str(OUT / arch / name), name, use_safetensors=True)
            save_file({"last_hidden_state": out}, str(OUT / arch / name / "expected.safetensors"))
            entry["cases"][name] = {"seed": 3456 + index, "config_class": cfg_cls.__name__, "config_kwargs": cfg_kwargs,
                                    "max_abs_diff_vs_base": diff, "params": sorted(new_keys)}
            print(f"-- {arch}/{name}: max|adapter-base|={diff:.4f}, {len(new_keys)} tensors")
    write_json(OUT / "manifest.json", manifest)
    print(f"total fixture size: {fc.tree_size(OUT)} bytes")


if __name__ == "__main__":
    main()
