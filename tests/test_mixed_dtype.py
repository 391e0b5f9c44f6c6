"""Adapters in another dtype than the model (methods/dtypes.py): float32 adapters on a bfloat16 model run without
autocast, compute in their own dtype and hand the activations' dtype back; they train in float32 and merge."""

from __future__ import annotations

import copy

import pytest
import torch

import archs
from adapterkit import BnConfig, Fuse, LoRAConfig
from adapterkit.methods.bottleneck import BottleneckAdapter
from adapterkit.methods.lora import IA3, LoRA

BF16 = torch.bfloat16


def _mixed(arch: str, configs: dict, fusion=None):
    """(a bfloat16 model with float32 adapters, the same weights all in float32). (IA)^3 vectors get more noise:
    around 1 they hardly change outputs that a layer norm follows."""
    model = archs.randomised(arch, configs, scale=2.0 if "ia3" in str(configs) else 0.5)
    if fusion is not None:
        model.add_adapter_fusion(fusion)
    model.to(BF16)
    for name in configs:
        model.adapter_to(name, dtype=torch.float32)
    return model, copy.deepcopy(model).float()


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()


@pytest.mark.parametrize("arch,config", [
    ("bert", "seq_bn"), ("bert", "par_bn"), ("bert", "double_seq_bn_inv"), ("bert", "lora"), ("bert", "ia3"),
    ("bert", "ia3[intermediate_lora=False,output_lora=True,scale_inputs=['output']]"), ("bert", "prefix_tuning"),
    ("bert", "compacter[reduction_factor=4]"), ("bert", "unipelt"), ("bert", "lora[use_gating=True]"),
    ("gpt2", "lora"), ("t5", "prefix_tuning"), ("llama", "seq_bn"), ("bert", "dora"),
    ("gpt2", "dora[attn_matrices=['q','k','v'],output_lora=True]"), ("llama", "dora[dora_semantics='peft']"),
    ("bert", "vera[intermediate_lora=True]"),
    ("llama", "vera"), ("gpt2", "dvora"),
    ("llama", "mtl_lora[n_up_projection=2]")])
def test_float32_adapters_on_a_bfloat16_model(arch, config):
    model, reference = _mixed(arch, {"a": config})
    model.set_active_adapters("a")
    reference.set_active_adapters("a")
    model.eval(), reference.eval()
    batch = archs.inputs(arch)
    with torch.no_grad():
        out = model(**batch)[0]
        expected = reference(**batch)[0]
        model.set_active_adapters(None)
        plain = model(**batch)[0]
    assert out.dtype == BF16
    # bfloat16 activations round at every op: the mixed model is as close to the float32 one as bfloat16 allows
    # (T5 rounds worst: 5-11% with adapters of any dtype), and much closer than the same model without its adapters
    assert _relative(out, expected) < (0.15 if arch == "t5" else 0.03)
    assert _relative(plain, expected) > 3 * _relative(out, expected)


def test_float32_adapters_train_in_float32():
    model, _ = _mixed("bert", {"a": "lora", "b": "seq_bn"})
    model.train_adapter(["a", "b"])
    model.adapter_to("a", dtype=torch.float32)
    params = [p for p in model.parameters() if p.requires_grad]
    assert params and all(p.dtype == torch.float32 for p in params)
    before = [p.detach().clone() for p in params]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    out = model(**archs.inputs("bert"))[0]
    assert out.dtype == BF16
    out.float().pow(2).mean().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in params)
    optimizer.step()
    # a step of 1e-3 on weights of size ~0.5 is below bfloat16's resolution there, not float32's
    assert all(not torch.equal(p, b) for p, b in zip(params, before))


def test_lora_and_ia3_modules_compute_in_their_own_dtype_exactly():
    torch.manual_seed(0)
    x, out = torch.randn(2, 5, 8).to(BF16), torch.randn(2, 5, 6).to(BF16)
    lora = LoRA(8, 6, LoRAConfig(r=2, alpha=4, init_weights="bert"))
    delta = lora.delta(x.float())
    assert torch.equal(lora(x, out), out + delta.to(BF16))
    assert lora.delta(x).dtype == BF16
    ia3 = IA3(8, 6, LoRAConfig(r=1, alpha=1, init_weights="ia3", use_gating=True, attn_matrices=["k"]))
    assert torch.equal(ia3(x, out), out * ia3.scale(x.float()).to(BF16))


def test_bottleneck_module_computes_in_its_own_dtype_exactly():
    torch.manual_seed(0)
    adapter = BottleneckAdapter(8, 4, BnConfig(mh_adapter=False, output_adapter=True, reduction_factor=2,
                                               non_linearity="relu", ln_after=True, use_gating=True))
    z, residual = torch.randn(2, 5, 8).to(BF16), torch.randn(2, 5, 8).to(BF16)
    assert adapter.own_dtype == torch.float32
    assert torch.equal(adapter.up_projection(z), adapter.up_projection(z.float()).to(BF16))
    out, up = adapter.adapt(z, residual)
    assert out.dtype == up.dtype == BF16
    adapter.to(torch.float64)  # .to() keeps the recorded dtype current
    assert adapter.own_dtype == torch.float64 and adapter.up_projection(z).dtype == BF16


def test_fusion_of_float32_adapters_on_a_bfloat16_model():
    model, reference = _mixed("bert", {"a": "seq_bn", "b": "seq_bn"}, fusion=Fuse("a", "b"))
    model.adapter_fusion_to(Fuse("a", "b"), dtype=torch.float32)
    for m in (model, reference):
        m.set_active_adapters(Fuse("a", "b"))
        m.eval()
    batch = archs.inputs("bert")
    with torch.no_grad():
        out, expected = model(**batch)[0], reference(**batch)[0]
    assert out.dtype == BF16 and _relative(out, expected) < 0.03


def test_merging_a_float32_lora_into_a_bfloat16_model():
    model, _ = _mixed("bert", {"a": "lora"})
    model.set_active_adapters("a")
    model.eval()
    batch = archs.inputs("bert")
    with torch.no_grad():
        unmerged = model(**batch)[0]
        model.merge_adapter("a")
        merged = model(**batch)[0]
    assert merged.dtype == BF16 and _relative(merged, unmerged) < 0.03


@pytest.mark.parametrize("config", ["lora", "unipelt"])
def test_float32_adapters_on_a_bfloat16_model_compile_as_one_graph(config):
    torch._dynamo.reset()
    model, _ = _mixed("bert", {"a": config})
    model.train_adapter("a")
    batch = archs.inputs("bert")
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    out = compiled(**batch)[0]
    out.float().pow(2).mean().backward()
    with torch._dynamo.config.patch(error_on_recompile=True):
        compiled(**batch)
    assert out.dtype == BF16
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
