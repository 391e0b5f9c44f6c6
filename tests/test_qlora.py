"""QLoRA: adapters on bitsandbytes 4-bit (nf4) and 8-bit bases loaded by transformers on the CPU
(`BitsAndBytesConfig`), src/adapterkit/quantized/.

The reference for "right" is a float model whose projections hold the dequantized weights (quant_helpers.py).
Requires bitsandbytes (the `test` extra installs it); marked `ci` so that CI cannot pass by skipping.
"""

from __future__ import annotations

import copy

import pytest
import torch
import transformers as tf

import adapterkit
import archs
from adapterkit.quantized import backend_of
from quant_helpers import (assert_same, copy_adapter, dequantized_float, float_error, logits, quantized_names,
                           randomise, stored)

try:
    import bitsandbytes as bnb
except ImportError:  # skipped per test (not at collection), so that the `ci` marker turns the skips into failures
    bnb = None

pytestmark = [pytest.mark.ci, pytest.mark.filterwarnings("ignore::UserWarning")]


@pytest.fixture(autouse=True)
def _needs_bitsandbytes():
    if bnb is None:
        pytest.skip("bitsandbytes is not installed (pip install -e '.[quant]'; the `test` extra has it)")

# hidden 64: bitsandbytes' CPU kernels (and its AVX512-BF16 repacking) need in_features >= the 4-bit blocksize (64)
SHAPE = dict(hidden_size=64, intermediate_size=128)
ALL_LINEAR = "lora[r=4,alpha=8,attn_matrices=['q','k','v','o'],intermediate_lora=True,output_lora=True]"
HUB_LORA = "lora[r=4,alpha=8,attn_matrices=['q','k','v']]"  # what an AdapterHub export of Llama can hold
BITS = {4: dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32),
        8: dict(load_in_8bit=True)}


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-llama")
    tf.LlamaForCausalLM(archs.config("llama", **SHAPE)).save_pretrained(path)
    return path


def quantized(base_dir, bits: int, repack: bool = False):
    """The tiny Llama loaded in `bits`, wrapped by adapterkit. `repack=False`: no AVX512-BF16 CPU repacking of the
    4-bit weights in inference (bf16 compute; CPUs differ), so the comparisons hold on every CPU."""
    model = tf.LlamaForCausalLM.from_pretrained(base_dir, quantization_config=tf.BitsAndBytesConfig(**BITS[bits]),
                                                device_map="cpu")
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit) and not repack:
            module.support_avx512bf16_for_cpu = False
    return adapterkit.init(model.eval())


@pytest.mark.parametrize("bits", [4, 8])
def test_qlora_trains_only_the_adapter_and_equals_the_dequantized_float_model(base_dir, bits):
    model = quantized(base_dir, bits)
    assert {type(m) for n, m in model.named_modules() if n in quantized_names(model)} == \
        {bnb.nn.Linear4bit if bits == 4 else bnb.nn.Linear8bitLt}
    model.add_adapter("a", config=ALL_LINEAR)
    model.train_adapter("a")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"adapterkit.a.{n}" for n, _ in model.adapterkit["a"].named_parameters()}
    assert len(trainable) == 2 * 7 * archs.L  # A and B on 7 projections per layer
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
    assert_same(before, stored(model))  # the base, quantized weights and states included, is untouched
    assert all(model.adapterkit["a"].state_dict()[k].abs().sum() > 0 for k in model.adapterkit["a"].state_dict())

    model.eval()
    reference = dequantized_float(base_dir, model)
    reference.add_adapter("a", config=ALL_LINEAR)
    copy_adapter(model, reference, "a")
    eps = float_error(model, reference, batch)
    print(f"{bits}-bit: quantized vs dequantized float, no adapter: {eps:.2e}")
    model.set_active_adapters("a"), reference.set_active_adapters("a")
    got, expected = logits(model, batch), logits(reference, batch)
    plain = logits(reference.set_active_adapters(None) or reference, batch)
    # the float rounding of the kernels (bnb's int8 path rounds its inputs to fp16), and far from the unadapted model
    print(f"{bits}-bit: with the trained adapter: {(got - expected).abs().max().item():.2e}; losses {losses[0]:.3f} -> "
          f"{losses[-1]:.3f}")
    assert (got - expected).abs().max().item() <= max(3 * eps, 1e-5)
    assert (plain - expected).abs().max().item() > 100 * max(eps, 1e-6)


@pytest.mark.parametrize("bits", [4, 8])
def test_save_load_on_a_fresh_quantized_model_gives_identical_outputs(base_dir, bits, tmp_path):
    model = quantized(base_dir, bits)
    model.add_adapter("a", config=ALL_LINEAR, set_active=True)
    randomise(model, "a")
    batch = archs.inputs("llama")
    expected = logits(model, batch)
    model.save_adapter(tmp_path / "a", "a")
    fresh = quantized(base_dir, bits)
    fresh.load_adapter(tmp_path / "a", set_active=True)
    assert torch.equal(logits(fresh, batch), expected)


METHODS = [ALL_LINEAR, "ia3", "dora", "vera", "loha[r=4]", "lokr[r=4]",
           "ia3[intermediate_lora=False,output_lora=True,scale_inputs=['output']]"]


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("config", METHODS)
def test_merge_rounds_and_reset_restores_the_quantized_weights_bit_for_bit(base_dir, bits, config):
    model = quantized(base_dir, bits)
    model.add_adapter("a", config=config, set_active=True)
    randomise(model, "a", scale=0.5 if "ia3" in config else 0.3)
    batch = archs.inputs("llama")
    before, unmerged = stored(model), logits(model, batch)
    # the float merge of the same adapter into the dequantized weights: what the quantized merge rounds
    reference = dequantized_float(base_dir, model)
    reference.add_adapter("a", config=config)
    copy_adapter(model, reference, "a")
    names = quantized_names(model)
    floats = dict(reference.named_modules())
    start = {n: floats[n].weight.detach().clone() for n in names}
    reference.merge_adapter("a")
    with pytest.warns(UserWarning, match="rounded to the quantization grid"):
        model.merge_adapter("a")
    assert any(not torch.equal(before[k], model.state_dict()[k]) for k in before)  # requantized
    modules = dict(model.named_modules())
    merged = 0
    for name in names:
        update = floats[name].weight.detach() - start[name]
        if update.abs().max() > 0:
            merged += 1
            # off by much less than the update (4-bit: the update widens each block's range, and the grid with it)
            error = backend_of(modules[name]).dequantize(modules[name]) - floats[name].weight.detach()
            assert error.norm() < (0.3 if bits == 4 else 0.05) * update.norm(), name
    assert merged > 0
    model.reset_adapter("a")
    assert_same(before, stored(model))
    assert torch.equal(logits(model, batch), unmerged)


def test_merge_reset_with_the_cpu_repacked_4bit_layout(base_dir):
    """On CPUs with AVX512-BF16, bitsandbytes repacks 4-bit weights in place at the first inference call; merging
    dequantizes from that layout and reset puts back exactly what was there."""
    model = quantized(base_dir, 4, repack=True)
    model.add_adapter("a", config=ALL_LINEAR, set_active=True)
    randomise(model, "a")
    batch = archs.inputs("llama")
    unmerged = logits(model, batch)  # (repacks, where the CPU supports it)
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    if layers[0].support_avx512bf16_for_cpu:
        assert all(m.weight.quant_state.packing_format_for_cpu for m in layers)
    saved = [(m.weight.data.clone(), copy.deepcopy(m.weight.quant_state.as_dict())) for m in layers]
    model.merge_adapter("a")
    model.reset_adapter("a")
    for m, (data, state) in zip(layers, saved):
        assert torch.equal(m.weight.data, data)
        now = m.weight.quant_state.as_dict()
        assert now.keys() == state.keys()
        assert all(torch.equal(now[k], v) if isinstance(v, torch.Tensor) else now[k] == v for k, v in state.items())
    assert torch.equal(logits(model, batch), unmerged)


@pytest.mark.parametrize("format", ["peft", "adapterhub"])
def test_checkpoints_move_between_quantized_and_float_bases(base_dir, format, tmp_path):
    qmodel = quantized(base_dir, 4)
    qmodel.add_adapter("a", config=HUB_LORA, set_active=True)
    randomise(qmodel, "a")
    qmodel.save_adapter(tmp_path / "from4bit", "a", format=format)
    fmodel = dequantized_float(base_dir, qmodel)
    fmodel.load_adapter(tmp_path / "from4bit", load_as="a", set_active=True, format=format)
    batch = archs.inputs("llama")
    eps = float_error(qmodel, fmodel, batch)
    qmodel.set_active_adapters("a"), fmodel.set_active_adapters("a")
    assert (logits(qmodel, batch) - logits(fmodel, batch)).abs().max().item() <= max(10 * eps, 1e-5)
    # the other way: trained on the float base, loaded on a fresh 4-bit one
    randomise(fmodel, "a", seed=1)
    fmodel.save_adapter(tmp_path / "fromfloat", "a", format=format)
    fresh = quantized(base_dir, 4)
    fresh.load_adapter(tmp_path / "fromfloat", load_as="a", set_active=True, format=format)
    for key, value in fmodel.adapterkit["a"].state_dict().items():
        assert torch.equal(fresh.adapterkit["a"].state_dict()[key], value), key
    assert (logits(fresh, batch) - logits(fmodel, batch)).abs().max().item() <= max(10 * eps, 1e-5)


def _train(model, name: str, steps: int = 10) -> None:
    model.train_adapter(name)
    batch = archs.inputs("llama")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(steps):
        model(**batch, labels=batch["input_ids"]).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


@pytest.mark.parametrize("format", ["peft", "adapterhub"])
def test_a_lora_trained_on_4bit_serves_on_the_original_float_model_and_back(base_dir, format, tmp_path):
    """QLoRA's use: train on the 4-bit base, serve on the original float checkpoint (and the other way). The
    adapted outputs differ by about what the bases differ (the quantization error), and far less than the
    adapter's own effect; the adapter tensors load exactly."""
    batch = archs.inputs("llama")
    for source, target in (("4bit", "float"), ("float", "4bit")):
        models = {"4bit": quantized(base_dir, 4),
                  "float": adapterkit.init(tf.LlamaForCausalLM.from_pretrained(base_dir).eval())}
        quantization_error = float_error(models["4bit"], models["float"], batch)
        torch.manual_seed(0)
        models[source].add_adapter("a", config=HUB_LORA, set_active=True)
        _train(models[source], "a")
        models[source].save_adapter(tmp_path / source, "a", format=format)
        models[target].load_adapter(tmp_path / source, load_as="a", set_active=True, format=format)
        for key, value in models[source].adapterkit["a"].state_dict().items():
            assert torch.equal(models[target].adapterkit["a"].state_dict()[key], value), key
        got, expected = logits(models[target], batch), logits(models[source], batch)
        models[source].set_active_adapters(None)
        effect = (expected - logits(models[source], batch)).abs().max().item()
        diff = (got - expected).abs().max().item()
        print(f"{format} {source}->{target}: quantization error {quantization_error:.3e}, adapted {diff:.3e}, "
              f"adapter effect {effect:.3e}")
        assert diff <= 2 * quantization_error and effect > 5 * quantization_error


def test_peft_runs_our_export_on_a_4bit_base_as_we_do(base_dir, tmp_path):
    peft = pytest.importorskip("peft")
    model = quantized(base_dir, 4)
    model.add_adapter("a", config=ALL_LINEAR, set_active=True)
    randomise(model, "a")
    model.save_adapter(tmp_path / "a", "a", format="peft")
    batch = archs.inputs("llama")
    ours = logits(model, batch)
    model.set_active_adapters(None)
    assert (logits(model, batch) - ours).abs().max().item() > 1e-3
    plain = tf.LlamaForCausalLM.from_pretrained(base_dir, quantization_config=tf.BitsAndBytesConfig(**BITS[4]),
                                                device_map="cpu")
    for module in plain.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
    theirs = logits(peft.PeftModel.from_pretrained(plain, tmp_path / "a").eval(), batch)
    assert (ours - theirs).abs().max().item() < 1e-5


def test_prepare_model_for_kbit_training(base_dir):
    grads = []
    for checkpointing in (False, True):
        model = tf.LlamaForCausalLM.from_pretrained(
            base_dir, dtype=torch.bfloat16, device_map="cpu",
            quantization_config=tf.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.float32))
        norms = [m for m in model.modules() if type(m).__name__ == "LlamaRMSNorm"]
        assert {m.weight.dtype for m in norms} == {torch.bfloat16}
        adapterkit.prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing)
        assert {m.weight.dtype for m in norms} == {torch.float32}
        assert model.lm_head.weight.dtype == torch.float32
        assert model.get_input_embeddings().weight.dtype == torch.float32
        assert not any(p.requires_grad for p in model.parameters())
        assert model.is_gradient_checkpointing == checkpointing
        model = adapterkit.init(model)
        torch.manual_seed(0)
        model.add_adapter("a", config=ALL_LINEAR)
        assert {p.dtype for p in model.adapterkit.parameters()} == {torch.float32}  # on a bf16 4-bit base
        model.train_adapter("a")
        randomise(model, "a")
        batch = archs.inputs("llama")
        model(**batch, labels=batch["input_ids"]).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.adapterkit.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for key in grads[0]:
        assert grads[0][key].abs().sum() > 0, key
        torch.testing.assert_close(grads[1][key], grads[0][key], rtol=1e-5, atol=1e-6)


def test_quantized_projections_never_take_the_fused_lora_node(base_dir):
    from adapterkit.methods.lora import fused
    model = quantized(base_dir, 4)
    model.add_adapter("a", config=ALL_LINEAR)
    model.train_adapter("a")
    q_proj = model.model.layers[0].self_attn.q_proj
    lora = next(m for m in model.adapterkit["a"].modules() if type(m).__name__ == "LoRA")
    x = torch.randn(2, 64, requires_grad=True)
    assert fused.fused_args(lora, q_proj, x) is None
    assert fused.fused_args(lora, torch.nn.Linear(64, 64).requires_grad_(False), x) is not None  # a float one would


def test_an_8bit_layer_without_int8_weights_is_a_clear_error():
    layer = bnb.nn.Linear8bitLt(64, 32, has_fp16_weights=True)
    with pytest.raises(adapterkit.AdapterError, match="not int8"):
        backend_of(layer).dequantize(layer)


@pytest.mark.parametrize("arch,cls", [("gpt2", tf.GPT2LMHeadModel), ("bert", tf.BertForMaskedLM)])
@pytest.mark.parametrize("config", ["lora[attn_matrices=['q','k','v']]", "dora", "seq_bn", "prefix_tuning",
                                    "prompt_tuning", "unipelt"])
def test_every_method_on_4bit_gpt2_and_bert_equals_the_dequantized_float_model(tmp_path, arch, cls, config):
    """GPT-2's fused c_attn (a Conv1D, quantized to a Linear4bit (out, in)) takes LoRA / DoRA on its q / k / v rows;
    bottleneck, prefix and prompt tuning run on a quantized model unchanged."""
    torch.manual_seed(0)
    cls(archs.config(arch, **({"n_embd": 64} if arch == "gpt2" else SHAPE))).save_pretrained(tmp_path)
    qmodel = adapterkit.init(cls.from_pretrained(tmp_path, quantization_config=tf.BitsAndBytesConfig(**BITS[4]),
                                                 device_map="cpu").eval())
    for module in qmodel.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
    assert quantized_names(qmodel)
    qmodel.add_adapter("a", config=config)
    qmodel.train_adapter("a")
    batch = archs.inputs(arch)
    qmodel(**batch).logits.pow(2).mean().backward()  # (prompt tuning lengthens the output: no labels here)
    assert all(p.grad is not None for p in qmodel.adapterkit.parameters() if p.requires_grad)
    randomise(qmodel, "a")
    qmodel.eval()
    fmodel = dequantized_float(tmp_path, qmodel, cls)
    fmodel.add_adapter("a", config=config)
    copy_adapter(qmodel, fmodel, "a")
    eps = float_error(qmodel, fmodel, batch)
    qmodel.set_active_adapters("a"), fmodel.set_active_adapters("a")
    got, expected = logits(qmodel, batch), logits(fmodel, batch)
    assert (got - expected).abs().max().item() <= max(3 * eps, 1e-5)
    fmodel.set_active_adapters(None)
    plain = logits(fmodel, batch)
    assert (plain - expected[:, -plain.shape[1]:]).abs().max().item() > 1e-3  # (a prompt's positions cut off)


def test_two_merges_into_one_quantized_module_are_refused_and_pissa_on_4bit_is_undone(tmp_path):
    """GPT-2's c_attn holds q, k and v: on a float base two adapters may merge into its q and v rows; quantized,
    the module is requantized and restored whole, so the second merge is refused (clearly). A base-changing init
    (PiSSA) requantizes too, and deleting the adapter restores the stored weights bit for bit."""
    torch.manual_seed(0)
    tf.GPT2LMHeadModel(archs.config("gpt2", n_embd=64)).save_pretrained(tmp_path)
    model = adapterkit.init(tf.GPT2LMHeadModel.from_pretrained(
        tmp_path, quantization_config=tf.BitsAndBytesConfig(**BITS[4]), device_map="cpu"))
    model.add_adapter("a", config="lora[attn_matrices=['q']]")
    model.add_adapter("b", config="lora[attn_matrices=['v']]")
    before = stored(model)
    model.merge_adapter("a")
    with pytest.raises(adapterkit.AdapterError, match="a quantized module, written and restored whole"):
        model.merge_adapter("b")
    model.reset_adapter("a")
    assert_same(before, stored(model))
    model.add_adapter("p", config="lora[init_weights='pissa',attn_matrices=['q','v']]")
    assert any(not torch.equal(before[k], v) for k, v in stored(model).items())
    model.delete_adapter("p")
    assert_same(before, stored(model))


def test_adapter_trainer_trains_qlora_with_gradient_checkpointing(base_dir, tmp_path):
    """transformers' Trainer refuses a "purely quantized" model; AdapterTrainer accepts one with a trainable adapter
    (and refuses one without, clearly)."""
    from datasets import Dataset
    model = tf.LlamaForCausalLM.from_pretrained(base_dir, quantization_config=tf.BitsAndBytesConfig(**BITS[4]),
                                                device_map="cpu")
    model = adapterkit.init(adapterkit.prepare_model_for_kbit_training(model))
    args = tf.TrainingArguments(output_dir=str(tmp_path), max_steps=10, per_device_train_batch_size=3,
                                learning_rate=1e-2, report_to=[], use_cpu=True, logging_steps=1, save_strategy="no")
    with pytest.raises(adapterkit.AdapterError, match="no trainable adapter"):
        adapterkit.AdapterTrainer(model=model, args=args)
    model.add_adapter("a", config=ALL_LINEAR)
    model.train_adapter("a")
    before = stored(model)
    batch = archs.inputs("llama")
    data = Dataset.from_dict({"input_ids": batch["input_ids"].tolist(), "labels": batch["input_ids"].tolist(),
                              "attention_mask": batch["attention_mask"].tolist()})
    trainer = adapterkit.AdapterTrainer(model=model, args=args, train_dataset=data)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 10 and losses[-1] < 0.9 * losses[0], losses
    assert not getattr(model, "_hf_peft_config_loaded", False)  # (set for the constructor only)
    assert_same(before, stored(model))


def test_a_peft_lora_trained_on_4bit_loads_on_the_float_base(base_dir, tmp_path):
    """peft's own save of a LoRA on a 4-bit base: adapterkit loads it on the dequantized float model with peft's
    outputs, and on a fresh 4-bit model too."""
    peft = pytest.importorskip("peft")
    plain = tf.LlamaForCausalLM.from_pretrained(base_dir, quantization_config=tf.BitsAndBytesConfig(**BITS[4]),
                                                device_map="cpu")
    for module in plain.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
    torch.manual_seed(0)
    peft_model = peft.get_peft_model(plain, peft.LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                             init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "peft")
    batch = archs.inputs("llama")
    theirs = logits(peft_model.eval(), batch)
    with peft_model.disable_adapter():
        assert (logits(peft_model, batch) - theirs).abs().max().item() > 1e-3  # the adapter does something
    fresh = quantized(base_dir, 4)
    fresh.load_adapter(tmp_path / "peft", load_as="a", set_active=True)
    assert (logits(fresh, batch) - theirs).abs().max().item() < 1e-5
    fmodel = dequantized_float(base_dir, fresh)
    fmodel.load_adapter(tmp_path / "peft", load_as="a", set_active=True)
    assert (logits(fmodel, batch) - theirs).abs().max().item() < 1e-5
