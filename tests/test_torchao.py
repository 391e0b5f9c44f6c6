"""Adapters on torchao int8 weight-only bases (`Int8WeightOnlyConfig`: an `nn.Linear` whose weight is an
`Int8Tensor`), loaded by transformers with `TorchAoConfig` or quantized with `quantize_`, on the CPU
(src/adapterkit/quantized/torchao.py). The same must-shows as test_qlora.py for bitsandbytes; the reference is a
float model with the dequantized weights (quant_helpers.py). Requires torchao (the `test` extra installs it);
marked `ci` so that CI cannot pass by skipping.
"""

from __future__ import annotations

import pytest
import torch
import transformers as tf

import adapterkit
import archs
from adapterkit.quantized import backend_of
from quant_helpers import (assert_same, copy_adapter, dequantized_float, float_error, logits, quantized_names,
                           randomise, stored)

try:
    import torchao.quantization as ao
    from torchao.quantization import Int8Tensor
except ImportError:  # skipped per test (not at collection), so that the `ci` marker turns the skips into failures
    ao = None

pytestmark = [pytest.mark.ci, pytest.mark.filterwarnings("ignore::UserWarning")]


@pytest.fixture(autouse=True)
def _needs_torchao():
    if ao is None:
        pytest.skip("torchao is not installed (pip install -e '.[quant]'; the `test` extra has it)")


SHAPE = dict(hidden_size=64, intermediate_size=128)
ALL_LINEAR = "lora[r=4,alpha=8,attn_matrices=['q','k','v','o'],intermediate_lora=True,output_lora=True]"
HUB_LORA = "lora[r=4,alpha=8,attn_matrices=['q','k','v']]"  # what an AdapterHub export of Llama can hold
METHODS = [ALL_LINEAR, "ia3", "dora", "vera", "loha[r=4]", "lokr[r=4]",
           "ia3[intermediate_lora=False,output_lora=True,scale_inputs=['output']]"]


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-llama")
    tf.LlamaForCausalLM(archs.config("llama", **SHAPE)).save_pretrained(path)
    return path


def int8(base_dir, config=None):
    """The tiny Llama loaded int8 weight-only by transformers (its decoder projections; not the head)."""
    quantization = tf.TorchAoConfig(config or ao.Int8WeightOnlyConfig())
    model = tf.LlamaForCausalLM.from_pretrained(base_dir, quantization_config=quantization, device_map="cpu")
    return adapterkit.init(model.eval())


def quantize(base_dir, config):
    """The tiny Llama quantized in place by torchao's `quantize_` (every nn.Linear, the head included)."""
    model = tf.LlamaForCausalLM.from_pretrained(base_dir).eval()
    ao.quantize_(model, config)
    return adapterkit.init(model)


def test_int8_trains_only_the_adapter_and_equals_the_dequantized_float_model(base_dir):
    model = int8(base_dir)
    names = quantized_names(model)
    assert len(names) == 7 * archs.L and {type(dict(model.named_modules())[n].weight) for n in names} == {Int8Tensor}
    model.add_adapter("a", config=ALL_LINEAR)
    model.train_adapter("a")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"adapterkit.a.{n}" for n, _ in model.adapterkit["a"].named_parameters()}
    assert len(trainable) == 2 * 7 * archs.L
    assert {p.dtype for p in model.adapterkit.parameters()} == {torch.float32}
    before = stored(model)
    batch = archs.inputs("llama")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(20):
        loss = model(**batch, labels=batch["input_ids"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses
    assert_same(before, stored(model))  # int8 data, scales and the float parameters: untouched
    assert all(v.abs().sum() > 0 for v in model.adapterkit["a"].state_dict().values())

    model.eval()
    reference = dequantized_float(base_dir, model)
    reference.add_adapter("a", config=ALL_LINEAR)
    copy_adapter(model, reference, "a")
    eps = float_error(model, reference, batch)
    model.set_active_adapters("a"), reference.set_active_adapters("a")
    got, expected = logits(model, batch), logits(reference, batch)
    plain = logits(reference.set_active_adapters(None) or reference, batch)
    print(f"torchao int8: no adapter {eps:.2e}; trained adapter {(got - expected).abs().max().item():.2e}; "
          f"losses {losses[0]:.3f} -> {losses[-1]:.3f}")
    assert (got - expected).abs().max().item() <= max(3 * eps, 1e-5)
    assert (plain - expected).abs().max().item() > 100 * max(eps, 1e-6)


def test_save_load_on_a_fresh_int8_model_gives_identical_outputs(base_dir, tmp_path):
    model = int8(base_dir)
    model.add_adapter("a", config=ALL_LINEAR, set_active=True)
    randomise(model, "a")
    batch = archs.inputs("llama")
    expected = logits(model, batch)
    model.save_adapter(tmp_path / "a", "a")
    fresh = int8(base_dir)
    fresh.load_adapter(tmp_path / "a", set_active=True)
    assert torch.equal(logits(fresh, batch), expected)


def _merge_and_reset(base_dir, model, config):
    """Merge (warned, requantized, within the grid of the float merge), then reset: the stored bits are back."""
    model.add_adapter("a", config=config, set_active=True)
    randomise(model, "a", scale=0.5 if "ia3" in config else 0.3)
    batch = archs.inputs("llama")
    before, unmerged = stored(model), logits(model, batch)
    reference = dequantized_float(base_dir, model)
    reference.add_adapter("a", config=config)
    copy_adapter(model, reference, "a")
    names = quantized_names(model)
    floats = dict(reference.named_modules())
    start = {n: floats[n].weight.detach().clone() for n in names}
    reference.merge_adapter("a")
    with pytest.warns(UserWarning, match="rounded to the quantization grid"):
        model.merge_adapter("a")
    assert any(not torch.equal(before[k], v) for k, v in stored(model).items() if not isinstance(v, tuple))
    modules = dict(model.named_modules())
    merged = 0
    for name in names:
        update = floats[name].weight.detach() - start[name]
        if update.abs().max() > 0:
            merged += 1
            assert type(modules[name].weight) is Int8Tensor
            error = backend_of(modules[name]).dequantize(modules[name]) - floats[name].weight.detach()
            assert error.norm() < 0.05 * update.norm(), name  # int8 rounding: far below the update
    assert merged > 0
    model.reset_adapter("a")
    assert_same(before, stored(model))
    assert torch.equal(logits(model, batch), unmerged)


@pytest.mark.parametrize("config", METHODS)
def test_merge_rounds_and_reset_restores_the_int8_weights_bit_for_bit(base_dir, config):
    _merge_and_reset(base_dir, int8(base_dir), config)


@pytest.mark.parametrize("granularity", ["row", "group", "tensor", "dynamic"])
def test_merge_reset_keeps_each_int8_layout(base_dir, granularity):
    """Per group and per tensor scales, and int8 activations too: the merge requantizes with the same block size
    and activation settings, reset restores the stored tensors."""
    config = {"row": ao.Int8WeightOnlyConfig(), "group": ao.Int8WeightOnlyConfig(granularity=ao.PerGroup(32)),
              "tensor": ao.Int8WeightOnlyConfig(granularity=ao.PerTensor()),
              "dynamic": ao.Int8DynamicActivationInt8WeightConfig()}[granularity]
    model = quantize(base_dir, config)
    layouts = {n: (m.weight.block_size, m.weight.act_quant_kwargs) for n, m in model.named_modules()
               if backend_of(m) is not None}
    assert "lm_head" in layouts
    _merge_and_reset(base_dir, model, ALL_LINEAR)
    model.merge_adapter("a")
    assert {n: (m.weight.block_size, m.weight.act_quant_kwargs) for n, m in model.named_modules()
            if backend_of(m) is not None} == layouts


@pytest.mark.parametrize("format", ["peft", "adapterhub"])
def test_checkpoints_move_between_int8_and_float_bases(base_dir, format, tmp_path):
    qmodel = int8(base_dir)
    qmodel.add_adapter("a", config=HUB_LORA, set_active=True)
    randomise(qmodel, "a")
    qmodel.save_adapter(tmp_path / "fromint8", "a", format=format)
    fmodel = dequantized_float(base_dir, qmodel)
    fmodel.load_adapter(tmp_path / "fromint8", load_as="a", set_active=True, format=format)
    batch = archs.inputs("llama")
    eps = float_error(qmodel, fmodel, batch)
    qmodel.set_active_adapters("a"), fmodel.set_active_adapters("a")
    assert (logits(qmodel, batch) - logits(fmodel, batch)).abs().max().item() <= max(10 * eps, 1e-5)
    randomise(fmodel, "a", seed=1)  # the other way: trained on the float base, loaded on a fresh int8 one
    fmodel.save_adapter(tmp_path / "fromfloat", "a", format=format)
    fresh = int8(base_dir)
    fresh.load_adapter(tmp_path / "fromfloat", load_as="a", set_active=True, format=format)
    for key, value in fmodel.adapterkit["a"].state_dict().items():
        assert torch.equal(fresh.adapterkit["a"].state_dict()[key], value), key
    assert (logits(fresh, batch) - logits(fmodel, batch)).abs().max().item() <= max(10 * eps, 1e-5)


def test_merging_into_another_torchao_type_is_a_clear_error_and_changes_nothing(base_dir):
    """int4 weight-only (IntxUnpackedToInt8Tensor) attaches and trains; merging into it is refused, and the
    refused merge leaves every stored tensor as it was."""
    model = quantize(base_dir, ao.IntxWeightOnlyConfig(weight_dtype=torch.int4))
    model.add_adapter("a", config=ALL_LINEAR)
    model.train_adapter("a")
    randomise(model, "a")
    batch = archs.inputs("llama")
    model(**batch, labels=batch["input_ids"]).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.adapterkit.parameters())
    before = stored(model)
    with pytest.raises(adapterkit.AdapterError, match="IntxUnpackedToInt8Tensor.*only Int8Tensor"):
        model.merge_adapter("a")
    assert_same(before, stored(model))


def test_a_weight_with_an_activation_pre_scale_is_a_clear_error():
    layer = torch.nn.Linear(64, 32)
    weight = Int8Tensor.from_hp(layer.weight.detach(), ao.PerRow(), act_pre_scale=torch.full((64,), 2.0))
    layer.weight = torch.nn.Parameter(weight, requires_grad=False)
    with pytest.raises(adapterkit.AdapterError, match="activation pre-scale"):
        backend_of(layer).dequantize(layer)


def test_prepare_model_for_kbit_training_on_a_bf16_int8_base(base_dir):
    """bf16 base, int8 projections: norms and head to float32, the Int8Tensor weights untouched; gradients with
    and without gradient checkpointing agree."""
    grads = []
    for checkpointing in (False, True):
        model = tf.LlamaForCausalLM.from_pretrained(base_dir, dtype=torch.bfloat16, device_map="cpu",
                                                    quantization_config=tf.TorchAoConfig(ao.Int8WeightOnlyConfig()))
        q_proj = model.model.layers[0].self_attn.q_proj
        assert type(q_proj.weight) is Int8Tensor and q_proj.weight.dtype == torch.bfloat16
        adapterkit.prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing)
        assert type(q_proj.weight) is Int8Tensor and q_proj.weight.dtype == torch.bfloat16
        assert model.lm_head.weight.dtype == torch.float32
        assert {m.weight.dtype for m in model.modules() if type(m).__name__ == "LlamaRMSNorm"} == {torch.float32}
        model = adapterkit.init(model)
        torch.manual_seed(0)
        model.add_adapter("a", config=ALL_LINEAR)
        assert {p.dtype for p in model.adapterkit.parameters()} == {torch.float32}
        model.train_adapter("a")
        randomise(model, "a")
        batch = archs.inputs("llama")
        model(**batch, labels=batch["input_ids"]).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.adapterkit.named_parameters()})
    for key in grads[0]:
        assert grads[0][key].abs().sum() > 0, key
        torch.testing.assert_close(grads[1][key], grads[0][key], rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # (a fresh interpreter: ~6 s of imports; CI runs it, the module being `ci`)
def test_adapterkit_imports_neither_torchao_nor_bitsandbytes():
    """The backends match nothing until the library is imported, and adapterkit never imports it: adapting and
    merging on a float model loads no torchao or bitsandbytes module beyond what transformers itself loads
    (transformers' quantizer registry imports torchao when it is installed)."""
    import subprocess
    import sys
    code = ("import sys, transformers, transformers.modeling_utils\n"
            "loaded = lambda: sorted(k for k in sys.modules if k.split('.')[0] in ('torchao', 'bitsandbytes'))\n"
            "before = loaded()\n"
            "import adapterkit, archs\n"
            "m = adapterkit.init(archs.model('llama')); m.add_adapter('a', 'lora', set_active=True)\n"
            "m(**archs.inputs('llama')); m.merge_adapter('a'); m.reset_adapter('a')\n"
            "print(sorted(set(loaded()) - set(before)), 'bitsandbytes' in before)")
    env = {"PYTHONPATH": ":".join(p for p in sys.path if p), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[] False"
