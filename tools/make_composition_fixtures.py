#!/usr/bin/env python
"""Generate composition / AdapterFusion reference fixtures from the real AdapterHub `adapters` package.

Run in the reference venv (the one tools/make_reference_fixtures.sh builds):

    .venv-ref/bin/python tools/make_composition_fixtures.py

It reuses the tiny base models and inputs of tests/fixtures/adapters_ref/<arch>/ (made by
tools/make_reference_fixtures.py) and writes tests/fixtures/adapters_ref_composition/:

  manifest.json
  <arch>/<case>/setup.json           {"setup": block.to_dict(), "adapters": {name: config}, "fusions": {...}}
  <arch>/<case>/weights.safetensors  every parameter the case added (adapters and fusion), full state_dict names
  <arch>/<case>/expected.safetensors last_hidden_state (eval mode) and, for fusion cases,
                                     fusion_attentions.<layer>.<location> (batch, seq, n_adapters)
  bert/fuse_hub/                     the fuse_dynamic fusion as `adapters` saves it (save_adapter_fusion)
  gpt2|llama|bart|t5/<case>/         the bottleneck / fusion cases where the layers add the residual themselves,
                                     on tests/fixtures/adapters_ref_archs/<arch>'s base model and inputs

Parameters are randomised like tools/make_reference_fixtures.py (normal(0, 0.2) after torch.manual_seed(1234 +
case index)); fusion layers get "trained-looking" weights: query/key normal(0, FUSION_QK_STD; BART's 0.3), biases
normal(0, 0.05), value = identity + normal(0, 0.05); the generator checks that their attention is neither
uniform nor saturated. `Average` is not generated: the package divides it by N again (a known defect), so the
tests check it against the formula instead.
"""

from __future__ import annotations

import shutil

import torch

import adapters
from adapters import DoubleSeqBnConfig, LoRAConfig, PrefixTuningConfig, SeqBnConfig
from adapters.composition import BatchSplit, Fuse, Parallel, Split, Stack
from safetensors.torch import load_file, save_file
from transformers import (BartModel, BertConfig, BertModel, GPT2Model, LlamaModel, RobertaConfig, RobertaModel,
                          T5Model)

import fixture_common as fc
from fixture_common import INIT_STD, MIN_DIFF

BASE = fc.REF_DIR
OUT = fc.FIXTURES / "adapters_ref_composition"
FUSION_QK_STD = 0.1
# BART's and T5's fixture models are 16 wide: its fusion attention needs larger query/key weights to be far from uniform
FUSION_QK_STD_BY_ARCH = {"bart": 0.3, "t5": 0.3}

ARCHS = {"bert": (BertConfig, BertModel), "roberta": (RobertaConfig, RobertaModel)}
# Models whose layers add the residual themselves (adapterkit's sublayer-hook sites: GPT-2 and Llama pre-LN, BART
# post-LN and T5 pre-LN encoder-decoders): their base models and inputs are tools/make_arch_fixtures.py's; only
# the bottleneck / fusion cases
SUBLAYER_ARCHS = {"gpt2": GPT2Model, "llama": LlamaModel, "bart": BartModel, "t5": T5Model}
SUBLAYER_BASE = fc.FIXTURES / "adapters_ref_archs"
SEQ_BN = ("seq_bn", SeqBnConfig, {})
HOULSBY = ("double_seq_bn", DoubleSeqBnConfig, {})
LORA = ("lora", LoRAConfig, {})
PREFIX3 = ("prefix_tuning", PrefixTuningConfig, {"prefix_length": 3, "bottleneck_size": 16})

# (case, {adapter: config spec}, {fusion name: (adapter names, fusion config)}, setup)
CASES = [
    ("stack", {"a": SEQ_BN, "b": HOULSBY}, {}, Stack("a", "b")),
    ("fuse_dynamic", {"a": SEQ_BN, "b": SEQ_BN}, {"a,b": (["a", "b"], "dynamic")}, Fuse("a", "b")),
    ("fuse_static", {"a": HOULSBY, "b": HOULSBY}, {"a,b": (["a", "b"], "static")}, Fuse("a", "b")),
    ("fuse_then_stack", {"a": SEQ_BN, "b": SEQ_BN, "c": SEQ_BN}, {"a,b": (["a", "b"], "dynamic")},
     Stack(Fuse("a", "b"), "c")),
    ("split", {"a": SEQ_BN, "b": SEQ_BN}, {}, Split("a", "b", splits=[3, 4])),
    ("batch_split", {"a": SEQ_BN, "b": SEQ_BN}, {}, BatchSplit("a", "b", batch_sizes=[1, 2])),
    ("parallel", {"a": SEQ_BN, "b": SEQ_BN}, {}, Parallel("a", "b")),
    ("stack_parallel", {"c": SEQ_BN, "a": SEQ_BN, "b": SEQ_BN}, {}, Stack("c", Parallel("a", "b"))),
    ("lora_batch_split", {"l1": LORA, "l2": LORA}, {}, BatchSplit("l1", "l2", batch_sizes=[2, 1])),
    ("prefix_single", {"p1": PREFIX3}, {}, Stack("p1")),
    # equal prefix lengths: with unequal ones the package pads the attention mask wrongly (it crops it), and rows
    # of the shorter prefix differ from that adapter alone by ~0.8; adapterkit gives each row its own result
    # (tests/test_composition.py checks that against single-adapter runs)
    ("prefix_batch_split", {"p1": PREFIX3, "p2": PREFIX3}, {}, BatchSplit("p1", "p2", batch_sizes=[1, 2])),
    ("prefix_parallel", {"p1": PREFIX3, "p2": PREFIX3}, {}, Parallel("p1", "p2")),
]


SUBLAYER_CASES = ("stack", "fuse_dynamic", "fuse_static", "fuse_then_stack", "split", "batch_split", "parallel",
                  "stack_parallel")


# Split's positions [3, 4] fit the 7-token encoder input, not the 5-token decoder input (the package refuses)
SKIPPED = {("bart", "split"), ("t5", "split")}
# prefix tuning composition where the package's prefix math is ours (not T5: it shifts T5's relative positions)
PREFIX_CASES = ("prefix_single", "prefix_batch_split", "prefix_parallel")
PREFIX_ARCHS = ("gpt2", "llama", "bart")


def generated(arch: str, case: str) -> bool:
    if arch in ARCHS:
        return True
    if case in PREFIX_CASES:
        return arch in PREFIX_ARCHS
    return case in SUBLAYER_CASES and (arch, case) not in SKIPPED


def load_base(arch: str):
    if arch in SUBLAYER_ARCHS:
        return SUBLAYER_ARCHS[arch].from_pretrained(SUBLAYER_BASE / arch / "base", attn_implementation="eager").eval()
    config_cls, model_cls = ARCHS[arch]
    config = config_cls.from_pretrained(BASE / arch / "base")
    config._attn_implementation = "eager"
    model = model_cls(config, add_pooling_layer=False)
    missing, unexpected = model.load_state_dict(load_file(BASE / arch / "base" / "model.safetensors"), strict=False)
    assert not unexpected and all("position_ids" in k or "token_type_ids" in k for k in missing), (missing, unexpected)
    return model.eval()


def randomise(model, keys: list[str], seed: int, qk_std: float = FUSION_QK_STD) -> None:
    params = dict(model.named_parameters())
    torch.manual_seed(seed)
    with torch.no_grad():
        for key in keys:
            p = params[key]
            if "adapter_fusion_layer" in key:
                if key.endswith("value.weight"):
                    p.copy_(torch.eye(p.shape[0]) + torch.randn_like(p) * 0.05)
                elif key.endswith(".bias"):
                    p.normal_(0.0, 0.05)
                else:
                    p.normal_(0.0, qk_std)
            elif key.endswith(".scaling"):
                p.normal_(0.0, INIT_STD).add_(1.0)
            else:
                p.normal_(0.0, INIT_STD)


def run_case(arch: str, index: int, case: str, specs: dict, fusions: dict, setup, inputs, base_out):
    model = load_base(arch)
    adapters.init(model)
    before = set(model.state_dict())
    configs = {}
    for name, (_, cls, kwargs) in specs.items():
        config = cls(**kwargs)
        model.add_adapter(name, config=config)
        configs[name] = config.to_dict()
    fusion_entries = {}
    for fusion, (names, fusion_config) in fusions.items():
        model.add_adapter_fusion(Fuse(*names), config=fusion_config)
        fusion_entries[fusion] = {"adapter_names": names,
                                  "config": model.adapters_config.get_fusion(fusion)[0].to_dict()}
    model.set_active_adapters(setup)
    model.eval()
    sd = model.state_dict()
    # named_parameters lists a shared module once; the state dict may list it under several names
    params = dict(model.named_parameters())
    new_keys = [k for k in sd if k not in before and k in params]
    randomise(model, new_keys, 1234 + index, FUSION_QK_STD_BY_ARCH.get(arch, FUSION_QK_STD))
    with torch.no_grad():
        out = model(**inputs, output_adapter_fusion_attentions=bool(fusions))
    hidden = out.last_hidden_state.detach().clone().contiguous()
    rows = hidden.shape[0]
    diff = (hidden - base_out.repeat(rows // base_out.shape[0], 1, 1)).abs().max().item()
    assert diff > MIN_DIFF, f"{arch}/{case}: the setup does not change the output ({diff})"
    expected = {"last_hidden_state": hidden}
    peaks = []
    for name, layers in (getattr(out, "adapter_fusion_attentions", None) or {}).items():
        for layer_id, locations in layers.items():
            for location, attn in locations.items():
                attn = torch.as_tensor(attn)
                peaks.append(attn.max(dim=-1).values.mean().item())
                expected[f"fusion_attentions.{layer_id}.{location}"] = attn.contiguous()
    if fusions:  # attention neither uniform (0.5 for two adapters) nor saturated, site by site and overall
        assert peaks and all(0.51 < p < 0.99 for p in peaks) and sum(peaks) / len(peaks) > 0.53, (case, peaks)
    directory = OUT / arch / case
    directory.mkdir(parents=True, exist_ok=True)
    weights = fc.detached(model.state_dict(), new_keys)
    save_file(weights, str(directory / "weights.safetensors"))
    save_file(expected, str(directory / "expected.safetensors"))
    setup_json = {"setup": setup.to_dict(), "adapters": configs, "fusions": fusion_entries}
    fc.write_json(directory / "setup.json", setup_json)
    if arch == "bert" and case == "fuse_dynamic":
        hub = OUT / arch / "fuse_hub"
        shutil.rmtree(hub, ignore_errors=True)
        model.save_adapter_fusion(str(hub), "a,b")
    print(f"-- {arch}/{case}: {setup} rows={rows} max|out-base|={diff:.4f} params={len(new_keys)}")
    return {"case_index": index, "seed": 1234 + index, "setup": repr(setup), "rows": rows,
            "max_abs_diff_vs_base": diff, "n_params": len(new_keys)}


def main():
    fc.deterministic()
    shutil.rmtree(OUT, ignore_errors=True)
    manifest = {
        "generator": "tools/make_composition_fixtures.py",
        "base": "tests/fixtures/adapters_ref/<arch>/base and inputs.safetensors",
        "versions": fc.versions(),
        "randomisation": {"adapters": f"normal(0, {INIT_STD}); learned scaling 1 + normal(0, {INIT_STD})",
                          "fusion": f"query/key normal(0, {FUSION_QK_STD}) (BART, T5 {FUSION_QK_STD_BY_ARCH['bart']}), "
                                    "biases normal(0, 0.05), "
                                    "value identity + normal(0, 0.05)",
                          "seed": "torch.manual_seed(1234 + case_index), parameters in state_dict order"},
        "archs": {},
    }
    for arch in (*ARCHS, *SUBLAYER_ARCHS):
        base = SUBLAYER_BASE if arch in SUBLAYER_ARCHS else BASE
        inputs = load_file(base / arch / "inputs.safetensors")
        base_out = load_file(base / arch / "base" / "expected.safetensors")["last_hidden_state"]
        manifest["archs"][arch] = {case: run_case(arch, i, case, specs, fusions, setup, inputs, base_out)
                                   for i, (case, specs, fusions, setup) in enumerate(CASES)
                                   if generated(arch, case)}
    fc.finish(OUT, manifest, 1.5 * 1024 * 1024, "composition fixtures exceed 1.5 MB")


if __name__ == "__main__":
    main()
