#!/usr/bin/env python
"""Generate prediction-head fixtures from the real AdapterHub `adapters` package (flexible-head models).

Run inside the reference venv that tools/make_reference_fixtures.sh creates (`make fixtures` runs it). It writes tests/fixtures/adapters_heads/:

  manifest.json
  <arch>/base/config.json            tiny model config
  <arch>/base/model.safetensors      `<Arch>Model` state dict (with pooler) shared by every case
  <arch>/inputs.safetensors          input_ids, attention_mask (batch 3 x seq 7)
  <arch>/<case>/head_config.json     written by `model.save_head(...)` (AdapterHub format)
  <arch>/<case>/pytorch_model_head.bin or model_head.safetensors
  <arch>/<case>/expected.safetensors the head's outputs (eval mode) on the inputs

Static cases save the head of a transformers task model (`BertForSequenceClassification`, ...) after
`adapters.init`, which AdapterHub writes with the task model's own key names. Deterministic; nothing downloaded.
"""

from __future__ import annotations

import json

import adapters
import torch
from adapters import BertAdapterModel, RobertaAdapterModel
from safetensors.torch import save_file
from transformers import BertConfig, BertForSequenceClassification, RobertaConfig, RobertaForSequenceClassification

import fixture_common as fc
from fixture_common import BATCH, INIT_STD, SEQ

OUT = fc.FIXTURES / "adapters_heads"
COMMON_CFG = fc.TINY_BERT
ARCHS = {
    "bert": dict(config_cls=BertConfig, flex_cls=BertAdapterModel, static_cls=BertForSequenceClassification,
                 extra={}),
    "roberta": dict(config_cls=RobertaConfig, flex_cls=RobertaAdapterModel,
                    static_cls=RobertaForSequenceClassification, extra={"pad_token_id": 1}),
}
# (case, add_<kind>_head method, kwargs, use_safetensors, input shape); case "static" uses the task model.
CASES = {
    "bert": [
        ("cls", "add_classification_head", {"num_labels": 3, "id2label": {0: "neg", 1: "neu", 2: "pos"}}, False),
        ("cls_pooled", "add_classification_head", {"num_labels": 2, "layers": 1, "use_pooler": True}, True),
        ("regression", "add_classification_head", {"num_labels": 1}, True),
        ("multilabel", "add_classification_head", {"num_labels": 4, "multilabel": True, "layers": 1}, True),
        ("tagging", "add_tagging_head", {"num_labels": 5}, False),
        ("multiple_choice", "add_multiple_choice_head", {"num_choices": 3}, True),
        ("qa", "add_qa_head", {}, False),
        ("masked_lm", "add_masked_lm_head", {}, True),
        ("causal_lm", "add_causal_lm_head", {}, False),
        ("static", None, {"num_labels": 4}, False),
    ],
    "roberta": [
        ("cls", "add_classification_head", {"num_labels": 3}, True),
        ("masked_lm", "add_masked_lm_head", {}, False),
        ("static", None, {"num_labels": 3}, True),
    ],
}


def make_config(arch: str, **overrides):
    spec = ARCHS[arch]
    return fc.eager_config(spec["config_cls"], **COMMON_CFG, **spec["extra"], **overrides)


def randomise(module: torch.nn.Module, shared: set[int], seed: int) -> None:
    """Head weights ~ N(0, 0.2) (layer-norm weights around 1); tensors shared with the base (tied) stay."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.data_ptr() in shared:
                continue
            p.normal_(0.0, INIT_STD)
            if p.dim() == 1 and name.endswith("weight"):
                p.add_(1.0)


def outputs_of(out) -> dict[str, torch.Tensor]:
    keys = ("logits", "start_logits", "end_logits")
    return {k: out[k].detach().clone().contiguous() for k in keys if k in out and out[k] is not None}


@torch.no_grad()
def main() -> None:
    fc.deterministic()
    manifest = {
        "generator": "tools/make_head_fixtures.py",
        "versions": fc.versions(),
        "model": dict(COMMON_CFG, attn_implementation="eager"),
        "randomisation": f"head params normal(0, {INIT_STD}) (1-d weights +1) after torch.manual_seed(100 + index); "
                         "parameters tied to the base (LM decoder weight) untouched",
        "archs": {},
    }
    for arch, spec in ARCHS.items():
        arch_dir = OUT / arch
        cfg = make_config(arch)
        torch.manual_seed(0)
        flex = spec["flex_cls"](cfg).eval()
        base = flex.base_model
        plain_keys = set(type(base)(cfg).state_dict())  # adapters.init adds prompt-tuning aliases: drop them
        base_state = base.state_dict()
        base_sd = fc.detached(base_state, [k for k in base_state if k in plain_keys])
        (arch_dir / "base").mkdir(parents=True, exist_ok=True)
        cfg.to_json_file(str(arch_dir / "base" / "config.json"))
        save_file(base_sd, str(arch_dir / "base" / "model.safetensors"))
        ids, mask = fc.padded_ids(cfg.pad_token_id, cfg.vocab_size)
        save_file({"input_ids": ids, "attention_mask": mask}, str(arch_dir / "inputs.safetensors"))
        shared = {p.data_ptr() for p in base.parameters()}
        entry = {}
        for index, (case, method, kwargs, use_st) in enumerate(CASES[arch]):
            case_dir = arch_dir / case
            inputs = {"input_ids": ids, "attention_mask": mask}
            if case == "static":
                model = spec["static_cls"](make_config(arch, num_labels=kwargs["num_labels"])).eval()
                result = model.base_model.load_state_dict(base_sd, strict=False)  # RoBERTa's has no pooler
                assert not result.missing_keys and all(k.startswith("pooler.") for k in result.unexpected_keys)
                adapters.init(model)
                randomise(model, {p.data_ptr() for p in model.base_model.parameters()}, 100 + index)
                out = model(**inputs)
                model.save_head(str(case_dir), use_safetensors=use_st)
            else:
                getattr(flex, method)(case, **kwargs)
                randomise(flex.heads[case], shared, 100 + index)
                flex.eval()
                if method == "add_multiple_choice_head":
                    inputs = {k: v.view(1, BATCH, SEQ) for k, v in inputs.items()}
                out = flex(**inputs, head=case)
                flex.save_head(str(case_dir), case, use_safetensors=use_st)
            expected = outputs_of(out)
            save_file(expected, str(case_dir / "expected.safetensors"))
            entry[case] = {"method": method or spec["static_cls"].__name__, "kwargs": {k: v for k, v in kwargs.items()},
                           "use_safetensors": use_st, "outputs": {k: list(v.shape) for k, v in expected.items()}}
            print(f"-- {arch}/{case}: {entry[case]['outputs']}")
        manifest["archs"][arch] = entry
    fc.write_json(OUT / "manifest.json", json.loads(json.dumps(manifest, default=str)))
    total = fc.tree_size(OUT)
    print(f"total fixture size: {total / 1024:.1f} KiB")
    assert total < 1024 * 1024, "head fixtures exceed 1 MB"


if __name__ == "__main__":
    main()
