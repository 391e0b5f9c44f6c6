"""LoHa and LoKr (peft's LyCORIS family) against peft: its saved adapters load here with its outputs, ours load in
peft with ours, and both ways the summary counts equal peft's; plus merge/reset, training and bad fields."""

from __future__ import annotations

import json
import warnings

import peft  # a test dependency: these checks must run, never skip
import pytest
import torch

import adapterkit
from adapterkit import AdapterConfigError, LoHaConfig, LoKrConfig
from adapterkit.methods.lokr.modules import factorization

from ckpt_helpers import outputs, randomise
from conftest import tiny_model

ATOL = 1e-5
FACTOR_NAMES = ("hada_", "lokr_")


def _randomised_peft(arch, config, seed=0):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = peft.get_peft_model(tiny_model(arch), config).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(k in name for k in FACTOR_NAMES):
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model


def _load_in_peft(arch, directory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return peft.PeftModel.from_pretrained(tiny_model(arch), directory).eval()


PEFT_CONFIGS = {
    "loha": lambda: peft.LoHaConfig(r=4, alpha=8, target_modules=["query", "value"]),
    "loha_ffn": lambda: peft.LoHaConfig(r=2, alpha=3, target_modules=["query", "key", "attention.output.dense",
                                                                       "intermediate.dense", "output.dense"]),
    "loha_layer1": lambda: peft.LoHaConfig(r=3, alpha=6, target_modules=["value"], layers_to_transform=[1]),
    "lokr": lambda: peft.LoKrConfig(r=4, alpha=8, target_modules=["query", "value"]),
    "lokr_low_rank": lambda: peft.LoKrConfig(r=1, alpha=2, decompose_both=True, target_modules=["query", "key",
                                                                                                 "intermediate.dense"]),
    "lokr_factor": lambda: peft.LoKrConfig(r=8, alpha=4, decompose_factor=4, target_modules=["value", "output.dense"]),
}


def _trainable(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if any(k in n for k in FACTOR_NAMES))


@pytest.mark.parametrize("arch", ["bert", "roberta"])
@pytest.mark.parametrize("kind", sorted(PEFT_CONFIGS))
def test_peft_made_adapter_loads_with_peft_outputs(arch, kind, batch, tmp_path):
    peft_model = _randomised_peft(arch, PEFT_CONFIGS[kind]())
    with torch.no_grad():
        expected = peft_model(**batch).last_hidden_state
    peft_model.save_pretrained(tmp_path)
    model = adapterkit.init(tiny_model(arch))
    name = model.load_adapter(tmp_path, load_as="p", set_active=True)
    assert type(model.adapters_config[name]).__name__ == ("LoHaConfig" if kind.startswith("loha") else "LoKrConfig")
    with adapterkit.AdapterSetup(None):
        assert (outputs(model, batch) - expected).abs().max() > 1e-2  # the adapter matters
    assert (outputs(model, batch) - expected).abs().max() <= ATOL
    assert sum(p.numel() for p in model.adapterkit[name].parameters()) == _trainable(peft_model)
    if kind == "loha_layer1":
        assert model.adapters_config[name].leave_out == [0]


@pytest.mark.parametrize("config", [
    "loha[r=4,alpha=8]", "loha[r=2,attn_matrices=['q','k','v','o'],intermediate=True,output=True,leave_out=[0]]",
    "lokr[r=4]", "lokr[r=1,decompose_both=True,intermediate=True]", "lokr[r=16,decompose_factor=8,output=True]",
])
def test_export_loads_in_peft_with_our_outputs(config, batch, tmp_path):
    model = adapterkit.init(tiny_model("bert"))
    model.add_adapter("a", config=config, set_active=True)
    randomise(model.adapterkit["a"])
    expected = outputs(model, batch)
    model.save_adapter(tmp_path, "a", format="peft")
    peft_model = _load_in_peft("bert", tmp_path)
    with torch.no_grad():
        got = peft_model(**batch).last_hidden_state
    assert (got - expected).abs().max() <= ATOL
    assert _trainable(peft_model) == sum(p.numel() for p in model.adapterkit["a"].parameters())
    back = adapterkit.init(tiny_model("bert"))
    back.load_adapter(tmp_path, load_as="a", set_active=True)
    assert torch.equal(outputs(back, batch), expected)  # our PEFT files round-trip exactly


@pytest.mark.parametrize("config", ["loha", "lokr", "lokr[init_weights='lycoris']"])
def test_default_init_is_the_identity(config, batch):
    model = adapterkit.init(tiny_model("bert"))
    with adapterkit.AdapterSetup(None):
        base = outputs(model, batch)
    model.add_adapter("a", config=config, set_active=True)
    assert torch.equal(outputs(model, batch), base)


@pytest.mark.parametrize("ours,theirs", [
    (LoHaConfig(r=4), lambda: peft.LoHaConfig(r=4)),
    (LoHaConfig(r=4, init_weights=False), lambda: peft.LoHaConfig(r=4, init_weights=False)),
    (LoKrConfig(r=2), lambda: peft.LoKrConfig(r=2)),
    (LoKrConfig(r=1, decompose_both=True, init_weights="lycoris"),
     lambda: peft.LoKrConfig(r=1, decompose_both=True, init_weights="lycoris")),
    (LoKrConfig(r=4, init_weights=False), lambda: peft.LoKrConfig(r=4, init_weights=False)),
])
def test_one_seed_gives_peft_s_factors(ours, theirs):
    from adapterkit.methods.loha.modules import LoHa
    from adapterkit.methods.lokr.modules import LoKr
    from peft.tuners.loha.layer import Linear as PeftLoHa
    from peft.tuners.lokr.layer import Linear as PeftLoKr
    base = torch.nn.Linear(48, 32)
    peft_cls, our_cls = (PeftLoHa, LoHa) if isinstance(ours, LoHaConfig) else (PeftLoKr, LoKr)
    torch.manual_seed(3)
    layer = peft_cls(base, "default", theirs(), r=ours.r, alpha=ours.alpha)
    torch.manual_seed(3)
    module = our_cls(48, 32, ours)
    mine = dict(module.named_parameters())
    theirs_ = {n.split(".")[0]: p for n, p in layer.named_parameters() if n.endswith(".default")}
    assert mine.keys() == theirs_.keys()
    for name, p in mine.items():
        assert torch.equal(p, theirs_[name]), name


@pytest.mark.parametrize("config", ["loha[r=3]", "lokr[r=2]", "lokr[r=1,decompose_both=True]"])
def test_merge_reset_and_training(config, batch):
    model = adapterkit.init(tiny_model("bert"))
    model.add_adapter("a", config=config)
    model.train_adapter("a")
    randomise(model.adapterkit["a"])
    out = model(**batch).last_hidden_state
    out.pow(2).mean().backward()
    grads = [p.grad for p in model.adapterkit["a"].parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    assert not any(p.grad is not None for n, p in model.named_parameters() if not n.startswith("adapterkit."))
    model.eval()
    expected = outputs(model, batch)
    before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("adapterkit.")}
    model.merge_adapter("a")
    assert (outputs(model, batch) - expected).abs().max() <= ATOL
    model.reset_adapter("a")
    assert (outputs(model, batch) - expected).abs().max() <= ATOL
    after = {k: v for k, v in model.state_dict().items() if not k.startswith("adapterkit.")}
    assert all(torch.equal(after[k], v) for k, v in before.items())  # reset restores the base bit for bit


def test_hadamard_backward_is_autograd_of_the_plain_product():
    from adapterkit.methods.loha.modules import HadamardProduct
    g = torch.Generator().manual_seed(0)
    factors = [torch.randn(s, generator=g, dtype=torch.float64, requires_grad=True)
               for s in [(5, 2), (2, 7), (5, 2), (2, 7)]]
    assert torch.autograd.gradcheck(HadamardProduct.apply, factors)


def test_float32_adapter_on_a_bfloat16_base(batch):
    model = adapterkit.init(tiny_model("bert").to(torch.bfloat16))
    model.add_adapter("a", config="loha[r=2]", set_active=True)
    model.adapterkit.float()
    randomise(model.adapterkit["a"])
    out = model(**batch).last_hidden_state
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    assert all(p.dtype == torch.float32 for p in model.adapterkit.parameters())


@pytest.mark.parametrize("dimension,factor", [(32, -1), (64, -1), (37, -1), (48, 4), (48, 5), (128, 8)])
def test_factorization_is_peft_s(dimension, factor):
    from peft.tuners.lokr.layer import factorization as peft_factorization
    assert factorization(dimension, factor) == peft_factorization(dimension, factor)


@pytest.mark.parametrize("cls,fields,message", [
    (LoHaConfig, {"r": 0}, "r=0 must be an integer >= 1"),
    (LoKrConfig, {"alpha": -1}, "alpha=-1 must be a finite number > 0"),
    (LoHaConfig, {"rank_dropout": 1.0}, "rank_dropout=1.0"),
    (LoKrConfig, {"decompose_factor": 0}, "decompose_factor=0"),
    (LoKrConfig, {"init_weights": "gaussian"}, "init_weights='gaussian' is not allowed"),
    (LoHaConfig, {"attn_matrices": ["x"]}, "attn_matrices"),
    (LoHaConfig, {"attn_matrices": []}, "targets no projection"),
])
def test_bad_fields_are_named(cls, fields, message):
    with pytest.raises(AdapterConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        cls(**fields)


@pytest.mark.parametrize("key,value,message", [
    ("rank_pattern", {"query": 0}, r"rank_pattern\['query'\]=0 must be an integer >= 1"),
    ("alpha_pattern", {"value": -1}, r"alpha_pattern\['value'\]=-1 must be a finite number > 0"),
    ("rank_pattern", ["query"], r"rank_pattern=\['query'\] must be an object"),
    ("rank_pattern", {"query": 2}, "wrong shapes"),  # a pattern the saved factors do not have
])
def test_peft_patterns_that_cannot_load_are_refused(key, value, message, tmp_path):
    peft_model = _randomised_peft("bert", PEFT_CONFIGS["loha"]())
    peft_model.save_pretrained(tmp_path)
    path = tmp_path / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), key: value}))
    model = adapterkit.init(tiny_model("bert"))
    with pytest.raises(adapterkit.CheckpointError, match=message):
        model.load_adapter(tmp_path)
    assert not model.adapters_config


def test_peft_export_on_gpt2_conv1d_is_refused_naming_why(tmp_path):
    import archs
    model = adapterkit.init(archs.model("gpt2"))
    model.add_adapter("a", config="loha[attn_matrices=['o']]")
    (tmp_path / "keep").write_text("old")
    with pytest.raises(AdapterConfigError, match="do not take Conv1D projections"):
        model.save_adapter(tmp_path, "a", format="peft")
    assert [p.name for p in tmp_path.iterdir()] == ["keep"]
    model.save_adapter(tmp_path / "native", "a")  # the adapterkit format holds it



@pytest.mark.parametrize("arch,config", [("bert", "loha[r=3,intermediate=True]"), ("bert", "lokr[r=2]"),
                                         ("gpt2", "loha[r=2,attn_matrices=['q','v','o'],output=True]")])
def test_one_matmul_path_equals_the_plain_path_with_its_gradients(arch, config, monkeypatch):
    """Alone on a whole projection the module runs `x (W + dW)^T + b` (nn/delta.py run_whole): the same values and
    gradients as `x W^T + b + x dW^T`, and it is the path taken."""
    import archs
    from adapterkit.nn.delta import DeltaWeight

    def run():
        torch.manual_seed(0)
        model = adapterkit.init(archs.model(arch))
        model.add_adapter("a", config=config)
        model.train_adapter("a")
        randomise(model.adapterkit["a"])
        out = model(**archs.inputs(arch)).last_hidden_state
        out.pow(2).mean().backward()
        return out.detach(), [p.grad.clone() for p in model.adapterkit["a"].parameters()]

    taken = []
    whole = DeltaWeight.run_whole

    def counted(self, *args):
        out = whole(self, *args)
        taken.append(out is not None)
        return out
    monkeypatch.setattr(DeltaWeight, "run_whole", counted)
    fast, fast_grads = run()
    assert any(taken) and all(g is not None for g in fast_grads)
    monkeypatch.setattr(DeltaWeight, "run_whole", lambda self, *a: None)
    plain, plain_grads = run()
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)
    for f, p in zip(fast_grads, plain_grads):
        torch.testing.assert_close(f, p, atol=1e-5, rtol=1e-4)


def test_merging_in_training_mode_applies_no_rank_dropout(batch):
    model = adapterkit.init(tiny_model("bert"))
    model.add_adapter("a", config="loha[r=2,rank_dropout=0.5]")
    randomise(model.adapterkit["a"])
    model.eval()
    model.set_active_adapters("a")
    expected = outputs(model, batch)  # eval: no dropout
    model.train()
    model.merge_adapter("a")
    model.eval()
    assert (outputs(model, batch) - expected).abs().max() <= ATOL
