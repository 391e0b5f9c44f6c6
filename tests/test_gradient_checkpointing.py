"""Gradient checkpointing (`model.gradient_checkpointing_enable()`) gives the adapter the same gradients as a plain
backward, for every method and some compositions, on tiny BERT, Llama and T5 in train mode.

Why this can break: a checkpointed layer runs its forward twice (once without a graph, again inside the backward),
so a hook that keeps per-forward state (a counter, a cached tensor, a random draw from its own generator) would see
the second run as a new step; prefix tuning's key / value prefixes and prompt tuning's extended mask cross the
checkpoint boundary. Random parts (AdapterPlus' stochastic depth, ReFT's dropout) draw from torch's RNG, which the
checkpoint replays on recomputation, so each run starts from the same seed.

Flavours: the non-reentrant checkpoint (transformers' default) on every architecture, within 1e-6 of the gradient's
scale (max(1, max |g|)): nearly all gradients are bit for bit equal; T5 with prompt tuning differs by a few float32
ulps (1.7e-6 on gradients of size 5: the order in which the decoder layers' contributions to the encoder output are
summed). The reentrant one (it needs input gradients on the embeddings: QLoRA's classic setup) on Llama, within
1e-5: its first pass runs under no_grad, where DoRA takes its inference formula (nn/dora.py's cached scale), so the
layers after it see outputs a few ulps apart (measured 2.3e-6 on Llama; on T5, where such ulps grow through the
decoder, up to 9e-5, which is why T5 runs only the non-reentrant flavour here).
"""

from __future__ import annotations

import copy
import functools

import pytest
import torch
import transformers as tf

import adapterkit
import archs
from adapterkit.configs.registry import resolve_config
from adapterkit.registry import members, specs

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # (gradient_checkpointing_enable's new name)

METHODS = [
    "seq_bn", "double_seq_bn", "par_bn", "scaled_par_bn", "seq_bn_inv", "double_seq_bn_inv",
    "compacter[reduction_factor=4]", "adapterplus",
    "lora[r=4,alpha=16,attn_matrices=['q','k','v','o'],intermediate_lora=True,output_lora=True]",
    "ia3[attn_matrices=['q','k','v','o'],output_lora=True]",
    "dora[r=4,alpha=16,attn_matrices=['q','k','v','o'],intermediate_lora=True,output_lora=True]",
    "vera[r=4,alpha=8,attn_matrices=['q','k','v','o'],intermediate_lora=True,output_lora=True]", "dvora",
    "loha[r=2,attn_matrices=['q','k','v','o'],intermediate=True,output=True]",
    "lokr[r=1,decompose_both=True,attn_matrices=['q','k','v','o'],intermediate=True,output=True]",
    "mtl_lora[r=4,n_up_projection=2]",
    "loreft[suffix_positions=1,r=2]", "noreft[suffix_positions=2,tied_weights=True]", "direft[suffix_positions=1]",
    "prefix_tuning[prefix_length=3,bottleneck_size=8]", "prefix_tuning_flat[prefix_length=2]", "prompt_tuning",
    "mam", "unipelt",
]
SETUPS = {
    "Stack": lambda m: (m.add_adapter("a", config="seq_bn"), m.add_adapter("b", config="lora"),
                        m.train_adapter(adapterkit.Stack("a", "b"))),
    "Parallel": lambda m: (m.add_adapter("a", config="seq_bn"), m.add_adapter("b", config="par_bn"),
                           m.train_adapter(["a", "b"]), m.set_active_adapters(adapterkit.Parallel("a", "b"))),
    "Fuse": lambda m: (m.add_adapter("a", config="seq_bn"), m.add_adapter("b", config="seq_bn"),
                       m.add_adapter_fusion(adapterkit.Fuse("a", "b")),
                       m.train_adapter_fusion(adapterkit.Fuse("a", "b"))),
    "BatchSplit": lambda m: (m.add_adapter("a", config="prefix_tuning"), m.add_adapter("b", config="lora"),
                             m.train_adapter(["a", "b"]),
                             m.set_active_adapters(adapterkit.BatchSplit("a", "b", batch_sizes=[1, 2]))),
}
ARCHS = ["bert", "llama", "t5"]


@functools.lru_cache(maxsize=None)
def _base(arch):
    return archs.model(arch)


def test_every_registered_method_is_covered():
    covered = {member.method for config in METHODS for member in members(resolve_config(config))}
    assert covered >= {spec.name for spec in specs()}


def _gradients(model, batch, calls: list) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(5)  # (stochastic depth, ReFT's dropout: the same draws in every run)
    calls.clear()
    out = model(**batch)[0]
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    (out * weights).sum().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}


def _compare(model, arch, flavours=(False,)) -> float:
    """Gradients of every trainable parameter without checkpointing and with it (non-reentrant, reentrant); the
    largest difference relative to the gradient's scale."""
    randomise = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=randomise) * 0.2)
    model.train()
    layer = next(m for m in model.modules() if isinstance(m, tf.modeling_layers.GradientCheckpointingLayer))
    inner = next(m for m in layer.modules() if isinstance(m, torch.nn.Linear))  # (the layer's own hooks run once)
    calls: list = []
    inner.register_forward_hook(lambda *args: calls.append(1))
    batch = archs.inputs(arch)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    plain = _gradients(model, batch, calls)
    assert len(calls) == 1 and plain.keys() == trainable
    assert sum(g.abs().sum() for g in plain.values()) > 0
    worst = 0.0
    for reentrant in flavours:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})
        checkpointed = _gradients(model, batch, calls)
        assert len(calls) == 2, "the layer was not recomputed: no checkpointing happened"
        assert checkpointed.keys() == plain.keys()
        for name, grad in plain.items():
            error = (checkpointed[name] - grad).abs().max().item() / max(1.0, grad.abs().max().item())
            assert error <= (1e-5 if reentrant else 1e-6), (name, reentrant, error)
            worst = max(worst, error)
    return worst


@pytest.mark.parametrize("config", METHODS)
@pytest.mark.parametrize("arch", ARCHS)
def test_checkpointing_gives_the_same_gradients(arch, config):
    model = adapterkit.init(copy.deepcopy(_base(arch)))
    model.add_adapter("a", config=config)
    model.train_adapter("a")
    _compare(model, arch, flavours=(False, True) if arch == "llama" else (False,))


@pytest.mark.parametrize("setup", list(SETUPS))
@pytest.mark.parametrize("arch", ARCHS)
def test_checkpointing_gives_the_same_gradients_in_compositions(arch, setup):
    model = adapterkit.init(copy.deepcopy(_base(arch)))
    SETUPS[setup](model)
    _compare(model, arch)


def test_checkpointing_enabled_before_the_adapters_were_added():
    """The order does not matter: checkpointing on the bare model, then adapterkit and a prefix + LoRA adapter."""
    base = _base("llama")
    results = []
    for enable_first in (False, True):
        model = copy.deepcopy(base)
        if enable_first:
            model.gradient_checkpointing_enable()
        model = adapterkit.init(model)
        model.add_adapter("a", config="prefix_tuning[prefix_length=3,bottleneck_size=8]")
        model.add_adapter("b", config="lora")
        model.train_adapter(adapterkit.Stack("a", "b"))
        model.set_active_adapters(["a", "b"])
        with torch.no_grad():
            g = torch.Generator().manual_seed(0)
            for p in model.adapterkit.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.2)
        results.append(_gradients(model.train(), archs.inputs("llama"), []))
    assert results[0].keys() == results[1].keys()
    for name in results[0]:
        torch.testing.assert_close(results[1][name], results[0][name], rtol=0, atol=1e-6)


@pytest.mark.parametrize("reentrant", [None, True, False])
def test_prepare_model_for_kbit_training_registers_one_input_gradient_hook(reentrant):
    """transformers' gradient_checkpointing_enable already makes the embeddings' output require a gradient for
    models fed input_ids; a second hook would outlive disable_input_require_grads()."""
    model = tf.LlamaForCausalLM(archs.config("llama")).to(torch.bfloat16)
    kwargs = None if reentrant is None else {"use_reentrant": reentrant}
    adapterkit.prepare_model_for_kbit_training(model, gradient_checkpointing_kwargs=kwargs)
    embeddings = model.get_input_embeddings()
    assert len(embeddings._forward_hooks) == 1
    assert model.model.layers[0]._gradient_checkpointing_func.keywords["use_reentrant"] is bool(reentrant)
    model.disable_input_require_grads()
    assert not embeddings._forward_hooks


def test_prepare_model_for_kbit_training_reentrant_without_input_ids():
    """ViT is fed pixel_values: transformers adds no input-gradient hook, so the reentrant checkpoint needs ours,
    and LoRA gets the same gradients as without checkpointing."""
    grads = []
    for checkpointing in (False, True):
        model = archs.model("vit")
        adapterkit.prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing,
                                                   gradient_checkpointing_kwargs={"use_reentrant": True})
        if checkpointing:
            assert len(model.get_input_embeddings()._forward_hooks) == 1
        model = adapterkit.init(model)
        torch.manual_seed(0)
        model.add_adapter("a", config="lora")
        model.train_adapter("a")
        with torch.no_grad():
            g = torch.Generator().manual_seed(0)
            for p in model.adapterkit.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.2)
        grads.append(_gradients(model.train(), archs.inputs("vit"), []))
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        assert grads[0][name].abs().sum() > 0
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=0, atol=1e-6)
