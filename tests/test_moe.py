"""Mixture-of-experts decoders (qwen3_moe, mixtral): LoRA and (IA)^3 per expert on the fused 3D expert weights,
bottleneck adapters on the MoE block's output, prefix tuning; checked against a model whose expert weights are
replaced by hand (W_e + s B_e A_e, rows / columns scaled by l_e)."""

from __future__ import annotations

import copy

import pytest
import torch
import transformers as tf

import adapterkit
from adapterkit import IA3Config, LoRAConfig
from adapterkit.errors import AdapterError
from adapterkit.interfaces import get_interface
from adapterkit.interfaces.infer import infer_interface

H, E = 32, 4


def _qwen3_moe():
    return tf.Qwen3MoeForCausalLM(tf.Qwen3MoeConfig(
        hidden_size=H, intermediate_size=48, moe_intermediate_size=16, num_experts=E, num_experts_per_tok=2,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8, vocab_size=64,
        mlp_only_layers=[1]))  # layer 1: a dense MLP, so both FFN kinds are covered


def _mixtral():
    return tf.MixtralForCausalLM(tf.MixtralConfig(
        hidden_size=H, intermediate_size=16, num_local_experts=E, num_experts_per_tok=2, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, vocab_size=64))


BUILDERS = {"qwen3_moe": _qwen3_moe, "mixtral": _mixtral}
_CACHE: dict = {}


def base_model(arch: str):
    if arch not in _CACHE:
        torch.manual_seed(0)
        model = BUILDERS[arch]().eval()
        with torch.no_grad():  # experts initialised small: make every expert matter
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        _CACHE[arch] = model
    return copy.deepcopy(_CACHE[arch])


X = torch.randint(0, 64, (2, 7), generator=torch.Generator().manual_seed(0))


def logits(model):
    return model(X).logits


def _randomize(module, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.2)


METHODS = {
    "lora": LoRAConfig(intermediate_lora=True, output_lora=True, r=4, alpha=8),
    "ia3": IA3Config(),
    "ia3_inputs": IA3Config(intermediate_lora=False, output_lora=True, scale_inputs=["output"]),
    "seq_bn": "seq_bn",
    "par_bn": "par_bn",
    "prefix_tuning": "prefix_tuning[prefix_length=3,bottleneck_size=8]",
}
IDENTITY = ("lora", "ia3", "ia3_inputs", "par_bn")
MERGEABLE = ("lora", "ia3", "ia3_inputs")


def test_named_interfaces_cover_the_experts():
    for arch in BUILDERS:
        interface = get_interface(arch)
        assert any(p.rstrip("?").endswith("experts.gate_up_proj") for p in interface.intermediate)
        assert any(p.rstrip("?").endswith("experts.down_proj") for p in interface.output)
        assert interface.residual_sites["output_adapter"].output == "mlp"


@pytest.mark.parametrize("arch", sorted(BUILDERS))
@pytest.mark.parametrize("method", sorted(METHODS))
def test_method_trains_merges_and_round_trips(arch, method, tmp_path):
    model = base_model(arch)
    with torch.no_grad():
        base = logits(model)
    adapterkit.init(model)
    model.add_adapter("a", config=METHODS[method])
    model.set_active_adapters("a")
    with torch.no_grad():
        if method in IDENTITY:
            torch.testing.assert_close(logits(model), base, atol=1e-6, rtol=0)
    model.train_adapter("a")
    _randomize(model.adapterkit["a"])
    model.eval()
    out = logits(model)
    assert (out - base).abs().max() > 1e-3
    out.square().sum().backward()
    unused = [n for n, p in model.adapterkit["a"].named_parameters() if p.grad is None or not p.grad.any()]
    assert not unused
    assert all(p.grad is None for p in model.model.parameters())  # the base stays frozen
    with torch.no_grad():
        trained = logits(model)
        if method in MERGEABLE:
            before = {n: p.clone() for n, p in model.model.named_parameters()}
            model.merge_adapter("a")
            torch.testing.assert_close(logits(model), trained, atol=1e-5, rtol=1e-5)
            model.reset_adapter("a")
            assert all(torch.equal(p, before[n]) for n, p in model.model.named_parameters())  # bit for bit
            torch.testing.assert_close(logits(model), trained, atol=0, rtol=0)
    model.save_adapter(str(tmp_path), "a")
    other = adapterkit.init(base_model(arch))
    other.load_adapter(str(tmp_path), load_as="a", set_active=True)
    with torch.no_grad():
        torch.testing.assert_close(logits(other), trained, atol=1e-6, rtol=0)


def _experts(model):
    return [m.mlp.experts for m in model.model.layers if hasattr(m.mlp, "experts")]


def _by_hand(arch, adapter_modules, adapt):
    """The base model with each expert weight replaced as `adapt(module at the location, weight (E, out, in))`."""
    model = base_model(arch)
    for layer_id, experts in enumerate(_experts(model)):
        for location, name in (("intermediate", "gate_up_proj"), ("output", "down_proj")):
            module = adapter_modules(layer_id, location)
            if module is not None:
                with torch.no_grad():
                    getattr(experts, name).copy_(adapt(module, getattr(experts, name)))
    return model


@pytest.mark.parametrize("arch", sorted(BUILDERS))
def test_lora_equals_each_expert_with_its_own_update(arch):
    model = adapterkit.init(base_model(arch))
    model.add_adapter("a", config=LoRAConfig(selfattn_lora=False, intermediate_lora=True, output_lora=True, r=2,
                                             alpha=6))
    model.set_active_adapters("a")
    _randomize(model.adapterkit["a"])
    layers = model.adapterkit["a"].layers
    experts_layers = [i for i, layer in enumerate(model.model.layers) if hasattr(layer.mlp, "experts")]

    def module_at(layer_id, group):
        layer_id = experts_layers[layer_id]
        found = [m for key, m in layers[str(layer_id)].items()
                 if key.split("_")[0] == group and m.lora_A.dim() == 3]
        assert len(found) == 1
        return found[0]

    def adapt(m, w):  # W_e + s B_e A_e, one expert at a time
        return torch.stack([w[e] + m.scaling * m.lora_B[e] @ m.lora_A[e] for e in range(E)])
    reference = _by_hand(arch, module_at, adapt)
    if arch == "qwen3_moe":  # the dense layer's MLP projections: W + s B A
        dense = reference.model.layers[1].mlp
        for key, proj in (("intermediate", dense.up_proj), ("intermediate_1", dense.gate_proj),
                          ("output", dense.down_proj)):
            m = layers["1"][key]
            with torch.no_grad():
                proj.weight.add_(m.scaling * m.lora_B @ m.lora_A)
    with torch.no_grad():
        torch.testing.assert_close(logits(model), logits(reference), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("inputs", [False, True])
def test_ia3_scales_each_expert_rows_or_columns(inputs):
    arch = "mixtral"
    config = (IA3Config(selfattn_lora=False, intermediate_lora=False, output_lora=True, scale_inputs=["output"])
              if inputs else IA3Config(selfattn_lora=False))
    model = adapterkit.init(base_model(arch))
    model.add_adapter("a", config=config)
    model.set_active_adapters("a")
    _randomize(model.adapterkit["a"])
    group = "output" if inputs else "intermediate"
    layers = model.adapterkit["a"].layers

    def module_at(layer_id, location):
        return layers[str(layer_id)][location] if location == group else None

    def adapt(m, w):  # rows (outputs) or columns (inputs) of W_e times l_e
        return torch.stack([w[e] * (m.ia3_l[e][None, :] if inputs else m.ia3_l[e][:, None]) for e in range(E)])
    reference = _by_hand(arch, module_at, adapt)
    with torch.no_grad():
        torch.testing.assert_close(logits(model), logits(reference), atol=1e-5, rtol=1e-5)


def test_any_experts_kernel_sees_the_adapted_weights():
    """transformers' batched experts kernel computes the same as its loop with the adapter in place."""
    model = adapterkit.init(base_model("mixtral"))
    model.add_adapter("a", config=LoRAConfig(intermediate_lora=True, output_lora=True))
    model.set_active_adapters("a")
    _randomize(model.adapterkit["a"])
    with torch.no_grad():
        eager = logits(model)
        model.config._experts_implementation = "batched_mm"
        try:
            batched = logits(model)
        finally:
            model.config._experts_implementation = "eager"
    torch.testing.assert_close(batched, eager, atol=1e-5, rtol=1e-5)


def test_stacked_adapters_apply_one_after_the_other():
    model = adapterkit.init(base_model("mixtral"))
    model.add_adapter("l", config=LoRAConfig(selfattn_lora=False, intermediate_lora=True))
    model.add_adapter("s", config=IA3Config(selfattn_lora=False))
    for name in ("l", "s"):
        _randomize(model.adapterkit[name], seed=len(name) + ord(name))
    model.set_active_adapters(adapterkit.Stack("l", "s"))
    lora, ia3 = model.adapterkit["l"].layers, model.adapterkit["s"].layers

    def module_at(layer_id, location):
        return (lora[str(layer_id)][location], ia3[str(layer_id)][location]) if location == "intermediate" else None

    def adapt(pair, w):  # (W_e + s B_e A_e) with rows scaled by l_e
        lo, sc = pair
        return torch.stack([(w[e] + lo.scaling * lo.lora_B[e] @ lo.lora_A[e]) * sc.ia3_l[e][:, None]
                            for e in range(E)])
    reference = _by_hand("mixtral", module_at, adapt)
    with torch.no_grad():
        torch.testing.assert_close(logits(model), logits(reference), atol=1e-5, rtol=1e-5)


def test_deleting_the_adapter_restores_the_plain_experts_forward():
    model = adapterkit.init(base_model("mixtral"))
    experts = model.model.layers[0].mlp.experts
    model.add_adapter("a", config=IA3Config())
    assert "forward" in experts.__dict__
    model.delete_adapter("a")
    assert "forward" not in experts.__dict__
    assert isinstance(experts.gate_up_proj, torch.nn.Parameter)


@pytest.mark.parametrize("config, words", [
    (LoRAConfig(intermediate_lora=True, use_dora=True), "DoRA"),
    (LoRAConfig(intermediate_lora=True, dropout=0.1), "dropout"),
    (LoRAConfig(intermediate_lora=True, use_gating=True), "gate"),
    (LoRAConfig(intermediate_lora=True, init_weights="pissa"), "init_weights"),
    ("loha[intermediate=True]", "fused mixture-of-experts weight"),
])
def test_what_cannot_adapt_experts_is_refused(config, words):
    model = adapterkit.init(base_model("mixtral"))
    with pytest.raises(AdapterError, match=words):
        model.add_adapter("a", config=config)


def test_compositions_needing_per_token_outputs_are_refused():
    model = adapterkit.init(base_model("mixtral"))
    for name in ("a", "b"):
        model.add_adapter(name, config=IA3Config())
    model.set_active_adapters(adapterkit.Parallel("a", "b"))
    with pytest.raises(AdapterError, match="run alone or stacked"):
        logits(model)


def test_inferred_interface_finds_the_experts_and_the_moe_block():
    model = base_model("mixtral")
    interface = infer_interface(model)
    assert interface.intermediate == ("mlp.experts.gate_up_proj",)
    assert interface.output == ("mlp.experts.down_proj",)
    site = interface.residual_sites["output_adapter"]
    assert (site.output, site.residual) == ("mlp", "post_attention_layernorm")
    adapterkit.init(model, interface=interface)
    model.add_adapter("a", config=IA3Config())
    assert any(k.startswith("intermediate") for k in model.adapterkit["a"].layers["0"])


def test_adapterhub_and_peft_ia3_forms_are_refused_clearly(tmp_path):
    """The `adapters` package has no MoE FFN, and peft's `target_parameters` is LoRA's: both refuse by name."""
    model = adapterkit.init(base_model("mixtral"))
    model.add_adapter("a", config=LoRAConfig(intermediate_lora=True))
    with pytest.raises(AdapterError, match="mixture-of-experts"):
        model.save_adapter(str(tmp_path / "hub"), "a", format="adapterhub")
    model.add_adapter("b", config=IA3Config())
    with pytest.raises(AdapterError, match="mixture-of-experts weight has no PEFT form"):
        model.save_adapter(str(tmp_path / "peft"), "b", format="peft")


PEFT_TARGETS = ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]


@pytest.mark.slow  # (importing peft takes a minute on a loaded machine)
@pytest.mark.ci
def test_peft_target_parameters_load_and_export_with_peft_outputs(tmp_path):
    """A peft-made `target_parameters` LoRA (q, v and both experts weights) loads and computes peft's outputs;
    adapterkit's export loads in peft with the same outputs and the same state-dict keys."""
    peft = pytest.importorskip("peft")
    torch.manual_seed(3)
    made = peft.get_peft_model(base_model("mixtral"), peft.LoraConfig(
        r=2, lora_alpha=6, target_modules=["q_proj", "v_proj"], target_parameters=PEFT_TARGETS,
        init_lora_weights=False)).eval()
    with torch.no_grad():
        expected = made(X).logits
    made.save_pretrained(str(tmp_path / "made"))
    model = adapterkit.init(base_model("mixtral"))
    model.load_adapter(str(tmp_path / "made"), load_as="p", set_active=True)
    with torch.no_grad():
        torch.testing.assert_close(logits(model), expected, atol=1e-5, rtol=0)
        assert (logits(model) - logits(base_model("mixtral"))).abs().max() > 1e-3
    model.save_adapter(str(tmp_path / "ours"), "p", format="peft")
    again = peft.PeftModel.from_pretrained(base_model("mixtral"), str(tmp_path / "ours")).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(X).logits, expected, atol=1e-5, rtol=0)
    from safetensors.torch import load_file
    ours = load_file(str(tmp_path / "ours" / "adapter_model.safetensors"))
    theirs = load_file(str(tmp_path / "made" / "adapter_model.safetensors"))
    assert sorted(ours) == sorted(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


def test_an_adapted_model_deep_copies():
    model = adapterkit.init(base_model("mixtral"))
    model.add_adapter("a", config=LoRAConfig(intermediate_lora=True, output_lora=True))
    model.set_active_adapters("a")
    _randomize(model.adapterkit["a"])
    twin = copy.deepcopy(model)
    with torch.no_grad():
        torch.testing.assert_close(logits(twin), logits(model), atol=0, rtol=0)
        for p in twin.adapterkit["a"].parameters():
            p.zero_()
        assert (logits(twin) - logits(model)).abs().max() > 1e-3  # the copy's experts use the copy's adapter
