"""MTL-LoRA ("mtl_lora") and the MultiTask block with `task_ids` in the forward.

Reference: tests/fixtures/adapters_mtl_lora (tools/make_mtl_fixtures.py, the `adapters` package 1.3.0): each
task's adapter as the package saved it (AdapterHub format) and its output for one batch of mixed task ids.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file

import adapterkit
import archs
from adapterkit import AdapterSetup, MTLLoRAConfig, MultiTask

FIXTURES = Path(__file__).parent / "fixtures"
MTL = FIXTURES / "adapters_mtl_lora"
MANIFEST = json.loads((MTL / "manifest.json").read_text())
BASES = {
    "bert": (FIXTURES / "adapters_ref" / "bert", transformers.BertModel, {"add_pooling_layer": False}),
    "roberta": (FIXTURES / "adapters_ref" / "roberta", transformers.RobertaModel, {"add_pooling_layer": False}),
    "gpt2": (FIXTURES / "adapters_ref_archs" / "gpt2", transformers.GPT2Model, {}),
    "llama": (FIXTURES / "adapters_ref_archs" / "llama", transformers.LlamaModel, {}),
}
CASES = [(arch, case) for arch in MANIFEST["archs"] for case in MANIFEST["cases"][arch]]


def _base(arch: str):
    path, cls, kwargs = BASES[arch]
    config = transformers.AutoConfig.from_pretrained(path / "base")
    config._attn_implementation = "eager"
    model = cls(config, **kwargs)
    missing, unexpected = model.load_state_dict(load_file(path / "base" / "model.safetensors"), strict=False)
    assert not unexpected and all("position_ids" in k or "token_type_ids" in k for k in missing)
    return adapterkit.init(model.eval()), load_file(path / "inputs.safetensors")


def _reference(arch: str, case: str):
    """Our model with the package's saved adapters loaded, shared and active as in the generator."""
    entry = MANIFEST["cases"][arch][case]
    model, inputs = _base(arch)
    for task in entry["tasks"]:
        model.load_adapter(MTL / arch / case / task)
    if entry["task_ids"] is None:
        model.set_active_adapters(entry["tasks"][0])
        kwargs = {}
    else:
        model.share_parameters(MultiTask(*entry["tasks"]))
        model.set_active_adapters(MultiTask(*entry["tasks"]))
        kwargs = {"task_ids": torch.tensor(entry["task_ids"])}
    expected = load_file(MTL / arch / case / "expected.safetensors")["last_hidden_state"]
    return model, inputs, kwargs, expected


def test_fixture_set_is_complete():
    assert sorted(MANIFEST["archs"]) == ["bert", "gpt2", "llama", "roberta"]
    assert all(set(MANIFEST["cases"][arch]) == {"multitask", "lone"} for arch in MANIFEST["archs"])
    assert "gpt2_c_attn" in MANIFEST["package_refuses"]  # why GPT-2's cases target the FFN
    assert sum(p.stat().st_size for p in MTL.rglob("*") if p.is_file()) < 400 * 1024


@pytest.mark.parametrize("arch,case", CASES)
def test_loading_the_packages_files_gives_its_outputs(arch, case):
    model, inputs, kwargs, expected = _reference(arch, case)
    with torch.no_grad():
        out = model(**inputs, **kwargs).last_hidden_state
        with AdapterSetup(None):
            base = model(**inputs).last_hidden_state
    assert (out - base).abs().max() > 1e-3
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_each_row_runs_its_own_task(arch):
    model, inputs, kwargs, expected = _reference(arch, "multitask")
    tasks = MANIFEST["tasks"]
    with torch.no_grad():
        outs = []
        for row, task in enumerate(MANIFEST["task_ids"]):
            with AdapterSetup(tasks[task]):
                outs.append(model(**{k: v[row:row + 1] for k, v in inputs.items()}).last_hidden_state)
        other = model(**inputs, task_ids=torch.tensor([0, 0, 0])).last_hidden_state
    torch.testing.assert_close(torch.cat(outs), expected, atol=1e-5, rtol=0)
    assert (other - expected).abs().max() > 1e-3  # the task ids matter


def test_the_package_saves_the_shared_tensors_in_every_task_and_sharing_ties_them():
    model, _, _, _ = _reference("bert", "multitask")
    a, b = model.adapterkit["a"].layers["0"]["attn_q"], model.adapterkit["b"].layers["0"]["attn_q"]
    assert a.lora_A is b.lora_A and a.lora_B is b.lora_B  # one tensor, trained for all tasks
    assert a.weights is not b.weights and a.task_specific is not b.task_specific
    hub = load_file(MTL / "bert" / "multitask" / "b" / "adapter.safetensors")
    key = "encoder.layer.0.attention.self.query.loras.b.lora_A"
    torch.testing.assert_close(hub[key], a.lora_A.detach(), atol=0, rtol=0)


@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_adapterhub_export_is_the_packages_file(arch, tmp_path):
    model, _, _, _ = _reference(arch, "multitask")
    model.save_adapter(tmp_path / "b", "b", format="adapterhub")
    ours = load_file(next((tmp_path / "b").glob("*.safetensors")))
    theirs = load_file(MTL / arch / "multitask" / "b" / "adapter.safetensors")
    assert ours.keys() == theirs.keys()
    for key, tensor in theirs.items():
        torch.testing.assert_close(ours[key], tensor, atol=0, rtol=0)
    saved = json.loads((tmp_path / "b" / "adapter_config.json").read_text())["config"]
    packaged = json.loads((MTL / arch / "multitask" / "b" / "adapter_config.json").read_text())["config"]
    assert {k: v for k, v in saved.items() if k in packaged} == {k: packaged[k] for k in saved if k in packaged}


def test_mixing_weights_do_not_overflow_where_the_package_gives_nan():
    assert MANIFEST["package_nan_at_weights_5"]  # measured by the generator
    model = archs.randomised("bert", {"x": MTLLoRAConfig(r=4, n_up_projection=2)})
    model.set_active_adapters("x")
    batch = archs.inputs("bert")
    with torch.no_grad():
        low = model(**batch).last_hidden_state
        for name, p in model.adapterkit.named_parameters():
            if name.endswith(".weights"):
                p.add_(5.0)  # softmax is shift-invariant: the same mix, the same output
        high = model(**batch).last_hidden_state
    assert torch.isfinite(high).all()
    torch.testing.assert_close(high, low, atol=1e-5, rtol=0)
