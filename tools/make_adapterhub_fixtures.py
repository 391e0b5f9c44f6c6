#!/usr/bin/env python
"""Generate AdapterHub-format checkpoint fixtures with the real `adapters` package's `model.save_adapter`.

Run with the reference venv (adapters 1.3.0, transformers 4.57.x):

    .venv-ref/bin/python tools/make_adapterhub_fixtures.py     (from the repository root; or: make fixtures)

It reuses the tiny base models and inputs of tests/fixtures/adapters_ref/ (written by make_reference_fixtures.py)
so no base weights are stored twice, and writes tests/fixtures/adapterhub/:

  manifest.json
  <arch>/<case>/<variant>/          exactly what `model.save_adapter(dir, name[, use_safetensors=True])` wrote:
                                    adapter_config.json + pytorch_adapter.bin (variant "bin") or
                                    adapter.safetensors (variant "safetensors"); head cases add head_config.json +
                                    pytorch_model_head.bin / model_head.safetensors
  <arch>/<case>/expected.safetensors  last_hidden_state (and logits for head cases) with the adapter active

Adapter weights are randomised (identity inits would hide mistakes); everything is seeded and deterministic.
"""

from __future__ import annotations

import shutil

import torch

import adapters
from adapters import BertAdapterModel, IA3Config, LoRAConfig, ParBnConfig, RobertaAdapterModel, SeqBnConfig
from adapters import DoubleSeqBnInvConfig
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, BertModel, RobertaModel

import fixture_common as fc
from fixture_common import INIT_STD, MIN_DIFF

BASE = fc.REF_DIR
OUT = fc.FIXTURES / "adapterhub"
MAX_BYTES = 600 * 1024

ARCHS = {"bert": (BertModel, BertAdapterModel), "roberta": (RobertaModel, RobertaAdapterModel)}
# (case, config, variants, head). Variant "bin" is the older default (torch.save), "safetensors" the newer one.
CASES = [
    ("seq_bn", SeqBnConfig(), ("bin", "safetensors"), None),
    ("double_seq_bn_inv", DoubleSeqBnInvConfig(reduction_factor=8), ("safetensors",), None),
    ("scaled_par_bn", ParBnConfig(scaling="learned", reduction_factor=4), ("bin",), None),
    ("lora", LoRAConfig(r=4, alpha=16, attn_matrices=["q", "k", "v"], intermediate_lora=True), ("bin", "safetensors"),
     None),
    ("ia3", IA3Config(), ("safetensors",), None),
    ("seq_bn_head", SeqBnConfig(reduction_factor=8), ("bin", "safetensors"), {"kind": "classification", "num_labels": 3}),
]


def base_model(arch: str, cls, config):
    weights = load_file(BASE / arch / "base" / "model.safetensors")
    model = cls(config) if cls in (BertAdapterModel, RobertaAdapterModel) else cls(config, add_pooling_layer=False)
    target = model.base_model
    missing, unexpected = target.load_state_dict(weights, strict=False)
    assert not unexpected, unexpected
    # the pooler (unused: heads read the first token) and the prompt-tuning alias of the word embeddings
    assert all(k.startswith(("pooler.", "prompt_tuning.")) or "position_ids" in k for k in missing), missing
    return model


def randomise(model, name: str, seed: int) -> None:
    """Adapter weights ~ N(0, 0.2); (IA)^3 vectors and learned scalings ~ 1 + N(0, 0.2)."""
    params = dict(model.named_parameters())
    keys = [k for k in params if f".{name}." in f".{k}." and not k.startswith("heads.")]
    fc.randomise(params, keys, seed, lambda k: fc.is_scale_param(k, fc.owner_type(model, k)))


@torch.no_grad()
def run(model, inputs, head: bool) -> dict[str, torch.Tensor]:
    out = model(**inputs, output_hidden_states=True)
    result = {"last_hidden_state": out.hidden_states[-1].contiguous()}
    if head:
        result["logits"] = out.logits.contiguous()
    return result


def main() -> None:
    fc.deterministic()
    if OUT.exists():
        shutil.rmtree(OUT)
    manifest = {"generator": "tools/make_adapterhub_fixtures.py",
                "versions": fc.versions(with_safetensors=False),
                "base": "tests/fixtures/adapters_ref/<arch>/base (model + inputs reused)",
                "randomisation": f"torch.manual_seed(100 + case index); adapter params ~ N(0, {INIT_STD}), "
                                 "(IA)^3 vectors and learned scalings 1 + N(0, 0.2); heads keep the package's init",
                "cases": {}}
    for arch, (plain_cls, head_cls) in ARCHS.items():
        config = AutoConfig.from_pretrained(BASE / arch / "base")
        config._attn_implementation = "eager"
        config._name_or_path = f"tiny-{arch}"  # recorded as model_name; keep local paths out of the fixtures
        inputs = load_file(BASE / arch / "inputs.safetensors")
        base_out = None
        for index, (case, adapter_config, variants, head) in enumerate(CASES):
            torch.manual_seed(0)
            model = base_model(arch, head_cls if head else plain_cls, config)
            if not head:
                adapters.init(model)
            model.add_adapter(case, config=adapter_config)
            if head:
                model.add_classification_head(case, num_labels=head["num_labels"])
            model.set_active_adapters(case)
            model.eval()
            randomise(model, case, 100 + index)
            expected = run(model, inputs, bool(head))
            with torch.no_grad():
                model.set_active_adapters(None)
                base_out = model(**inputs, output_hidden_states=True).hidden_states[-1]
                model.set_active_adapters(case)
            diff = (expected["last_hidden_state"] - base_out).abs().max().item()
            assert diff > MIN_DIFF, f"{arch}/{case}: the adapter does not change the output ({diff})"
            case_dir = OUT / arch / case
            case_dir.mkdir(parents=True)
            for variant in variants:
                model.save_adapter(str(case_dir / variant), case, use_safetensors=(variant == "safetensors"))
            save_file(expected, str(case_dir / "expected.safetensors"))
            files = sorted(str(p.relative_to(case_dir)) for p in case_dir.rglob("*") if p.is_file())
            manifest["cases"].setdefault(arch, {})[case] = {
                "config": adapter_config.to_dict(), "variants": list(variants), "head": head,
                "max_abs_diff_vs_base": diff, "files": files}
            print(f"{arch}/{case}: {', '.join(files)} (adapter changes outputs by {diff:.3f})")
    fc.write_json(OUT / "manifest.json", manifest)
    total = fc.tree_size(OUT)
    print(f"total: {total} bytes")
    assert total < MAX_BYTES, f"fixtures too large: {total} bytes"


if __name__ == "__main__":
    main()
