"""`init_weights_seed` on every config: each module of a seeded adapter starts from that seed, so all its layers
(and two adapters or models with the same config) start equal; the weights equal the `adapters` 1.3.0 package's
seeded init (tools/make_plus_fixtures.py: seq_bn, AdapterPlus, LoRA, prefix tuning)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
import torch.nn as nn

import adapterkit
from adapterkit import AdapterConfig, ConfigUnion, LoRAConfig, MethodSpec, SeqBnConfig, register_method
from adapterkit.errors import AdapterConfigError
from adapterkit.registry import unregister_method

import archs
from plus_fixtures import ARCHS, package_config, package_weights
from test_reference_adapters import load_base

INIT_CASES = ["seq_bn", "adapterplus", "lora", "lora_qkv_ffn", "prefix_tuning"]
# seeded configs whose modules all have the same shapes per kind (so equal across layers)
SEEDED = ["seq_bn[init_weights_seed=3]", "double_seq_bn[init_weights_seed=3]", "adapterplus[init_weights_seed=3]",
          "lora[init_weights_seed=3]", "lora[init_weights_seed=3,init_weights=bert]",
          "compacter[init_weights_seed=3,shared_phm_rule=False,reduction_factor=4]", "loha[init_weights_seed=3]",
          "lokr[init_weights_seed=3]"]


def _weights(model, name):
    return {k: v.detach().clone() for k, v in model.adapterkit[name].state_dict().items()}


def _per_layer(weights: dict) -> dict:
    """{(the key without its layer index): [tensor per layer]} for per-layer weights."""
    out: dict = {}
    for key, tensor in weights.items():
        parts = key.split(".")
        if parts[0] == "layers":
            out.setdefault(".".join(parts[2:]), []).append(tensor)
    return out


@pytest.mark.parametrize("case", INIT_CASES)
@pytest.mark.parametrize("arch", ARCHS)
def test_seeded_init_equals_the_package(arch, case):
    directory = f"init_{case}"
    config = package_config(arch, directory)
    assert config.init_weights_seed is not None
    model = adapterkit.init(load_base(arch))
    torch.manual_seed(123)  # whatever the RNG held before, the seed decides
    model.add_adapter(case, config=config)
    reference = package_weights(model, arch, directory, case, config)
    ours = _weights(model, case)
    assert set(reference) == set(ours)
    for key, tensor in reference.items():
        assert torch.equal(ours[key], tensor), key


@pytest.mark.parametrize("config", SEEDED)
def test_seeded_layers_and_models_start_equal(config):
    first = adapterkit.init(archs.model("bert"))
    second = adapterkit.init(archs.model("bert", seed=5))
    torch.manual_seed(1)
    first.add_adapter("a", config=config)
    torch.manual_seed(2)
    second.add_adapter("b", config=config)
    a, b = _weights(first, "a"), _weights(second, "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    per_layer = _per_layer(a)
    assert per_layer and all(len(ts) == 2 for ts in per_layer.values())
    random = 0
    for key, tensors in per_layer.items():
        assert torch.equal(tensors[0], tensors[1]), key
        random += int(tensors[0].unique().numel() > 2)
    assert random > 0  # something random was drawn, and drawn equal


@pytest.mark.parametrize("config", ["seq_bn", "lora", "loha"])
def test_without_a_seed_layers_differ(config):
    model = adapterkit.init(archs.model("bert"))
    model.add_adapter("a", config=config)
    per_layer = _per_layer(_weights(model, "a"))
    assert any(not torch.equal(*ts) for ts in per_layer.values() if ts[0].unique().numel() > 2)


def test_seeds_differ_and_zero_is_a_seed():
    weights = []
    for seed in (0, 1):
        model = adapterkit.init(archs.model("bert"))
        model.add_adapter("a", config=SeqBnConfig(init_weights_seed=seed))
        weights.append(_weights(model, "a")["layers.0.output_adapter.down.weight"])
    assert not torch.equal(*weights)
    torch.manual_seed(0)
    model = adapterkit.init(archs.model("bert"))
    torch.manual_seed(99)
    model.add_adapter("b", config=SeqBnConfig())  # unseeded: drawn from the RNG as it is
    assert not torch.equal(_weights(model, "b")["layers.0.output_adapter.down.weight"], weights[0])


def test_the_callers_rng_is_left_where_it_was():
    """A deliberate difference from the package, which leaves the global RNG reseeded after add_adapter."""
    model = adapterkit.init(archs.model("bert"))
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    model.add_adapter("a", config=LoRAConfig(init_weights_seed=4))
    assert torch.equal(torch.rand(3), expected)


def test_union_members_have_their_own_seeds():
    union = ConfigUnion(SeqBnConfig(init_weights_seed=5), LoRAConfig(init_weights_seed=6))
    model = adapterkit.init(archs.model("bert"))
    model.add_adapter("u", config=union)
    alone = adapterkit.init(archs.model("bert"))
    alone.add_adapter("s", config=SeqBnConfig(init_weights_seed=5))
    alone.add_adapter("l", config=LoRAConfig(init_weights_seed=6))
    u, s, lora = _weights(model, "u"), _weights(alone, "s"), _weights(alone, "l")
    assert set(u) == set(s) | set(lora)
    assert all(torch.equal(u[k], v) for k, v in {**s, **lora}.items())
    assert "init_weights_seed" not in union.to_dict()  # a union's seeds are its members'


def test_seed_survives_save_and_load(tmp_path):
    model = adapterkit.init(archs.model("bert"))
    model.add_adapter("a", config="lora[init_weights_seed=9]")
    model.save_adapter(tmp_path, "a")
    loaded = adapterkit.init(archs.model("bert"))
    loaded.load_adapter(tmp_path)
    assert loaded.adapters_config["a"].init_weights_seed == 9


@pytest.mark.parametrize("value", [-1, 1.5, "3", True, 2**64])
def test_bad_seed_is_refused(value):
    with pytest.raises(AdapterConfigError, match=r"LoRAConfig.init_weights_seed=.* must be None or an integer >= 0"):
        LoRAConfig(init_weights_seed=value)
    with pytest.raises(AdapterConfigError, match="init_weights_seed"):
        adapterkit.resolve_config("seq_bn", init_weights_seed=-3)


# -- a method from outside gets the seed without doing anything for it ---------------------------------------
@dataclass(eq=False)
class _NoisyConfig(AdapterConfig):
    architecture: ClassVar[str] = "noisy_test"

    def validate(self) -> None:
        pass


class _Noisy(nn.Module):
    run_whole = None
    combine = None

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(4))

    def forward(self, x, out):
        return out + self.w.sum() * 0


def _build(state, name, config):
    for layer_id, location, projection in state.projections(state.interface.linear_locations(attn_matrices=["q"])):
        state.add_layer_module(name, layer_id, location, _Noisy(), site="linear", target=projection)


@pytest.fixture
def noisy():
    spec = register_method(MethodSpec(name="noisy_test", label="noisy", config=_NoisyConfig, build=_build))
    yield spec
    unregister_method(spec.name)


def test_a_plugged_in_method_gets_the_seed_for_free(noisy):
    model = adapterkit.init(archs.model("bert"))
    model.add_adapter("n", config=_NoisyConfig(init_weights_seed=8))
    model.add_adapter("m", config=_NoisyConfig())
    seeded, unseeded = _per_layer(_weights(model, "n")), _per_layer(_weights(model, "m"))
    (tensors,), (others,) = seeded.values(), unseeded.values()
    assert torch.equal(*tensors) and not torch.equal(*others)
    torch.manual_seed(8)
    assert torch.equal(tensors[0], torch.randn(4))  # the module was constructed right after the seed
