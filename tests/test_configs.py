"""Configs: names of both generations, config strings, dict round trips, validation messages."""

from __future__ import annotations

import dataclasses
import json

import pytest

import adapterkit
from adapterkit import (ADAPTER_CONFIG_MAP, AdapterConfig, AdapterConfigError, DoubleSeqBnConfig, IA3Config,
                        LoRAConfig, ParBnConfig, SeqBnConfig, resolve_config)

ALIASES = [("pfeiffer", "seq_bn"), ("houlsby", "double_seq_bn"), ("parallel", "par_bn"),
           ("pfeiffer+inv", "seq_bn_inv"), ("houlsby+inv", "double_seq_bn_inv"), ("scaled_parallel", "scaled_par_bn")]


@pytest.mark.parametrize("old,new", ALIASES)
def test_both_name_generations(old, new):
    assert resolve_config(old) == resolve_config(new)


def test_class_aliases():
    assert adapterkit.PfeifferConfig is SeqBnConfig
    assert adapterkit.HoulsbyConfig is DoubleSeqBnConfig
    assert adapterkit.ParallelConfig is ParBnConfig


def test_defaults_follow_design():
    p, h, par = SeqBnConfig(), DoubleSeqBnConfig(), ParBnConfig()
    assert (p.mh_adapter, p.output_adapter, p.non_linearity, p.reduction_factor) == (False, True, "relu", 16)
    assert (p.original_ln_before, p.original_ln_after, p.residual_before_ln) == (True, True, True)
    assert (h.mh_adapter, h.output_adapter, h.non_linearity, h.original_ln_before) == (True, True, "swish", False)
    assert (par.is_parallel, par.scaling, par.reduction_factor, par.init_weights) == (True, 4.0, 2, "mam_adapter")
    assert resolve_config("scaled_parallel").scaling == "learned"
    lora, ia3 = LoRAConfig(), IA3Config()
    assert (lora.r, lora.alpha, lora.attn_matrices, lora.composition_mode) == (8, 8, ["q", "v"], "add")
    assert (ia3.attn_matrices, ia3.intermediate_lora, ia3.composition_mode, ia3.r) == (["k", "v"], True, "scale", 1)
    assert resolve_config("pfeiffer+inv").inv_adapter == "nice"


def test_config_string():
    cfg = resolve_config("lora[r=4,alpha=16,attn_matrices=['q','k','v']]")
    assert isinstance(cfg, LoRAConfig)
    assert (cfg.r, cfg.alpha, cfg.attn_matrices) == (4, 16, ["q", "k", "v"])
    cfg = resolve_config("pfeiffer[reduction_factor=8, non_linearity=gelu]")
    assert (cfg.reduction_factor, cfg.non_linearity) == (8, "gelu")
    assert resolve_config("ia3[intermediate_lora=False]").intermediate_lora is False


def test_registered_defaults_are_not_shared():
    cfg = resolve_config("lora")
    cfg.attn_matrices.append("k")
    assert ADAPTER_CONFIG_MAP["lora"].attn_matrices == ["q", "v"]


@pytest.mark.parametrize("name", sorted(ADAPTER_CONFIG_MAP))
def test_dict_round_trip_every_field(name):
    cfg = resolve_config(name)
    data = json.loads(json.dumps(cfg.to_dict()))
    assert set(data) == {f.name for f in dataclasses.fields(cfg)} | {"architecture"}
    back = AdapterConfig.from_dict(data)
    assert back == cfg and back.to_dict() == cfg.to_dict()
    assert type(cfg).from_dict(data).__class__ is type(cfg)


def test_round_trip_non_default_values():
    cfg = SeqBnConfig(reduction_factor={"default": 16, "1": 4}, leave_out=[0], dropout=0.1, scaling=2.0)
    assert AdapterConfig.from_dict(cfg.to_dict()) == cfg
    assert AdapterConfig.from_dict(cfg.to_dict()).reduction_factor_for(1) == 4


def test_unknown_config_name_lists_valid_ones():
    with pytest.raises(AdapterConfigError) as err:
        resolve_config("pfeifer")
    msg = str(err.value)
    assert "'pfeifer'" in msg and "pfeiffer" in msg and "lora" in msg and "seq_bn" in msg


def test_unknown_key_in_config_string():
    with pytest.raises(AdapterConfigError) as err:
        resolve_config("lora[rank=4]")
    assert "'rank'" in str(err.value) and "alpha" in str(err.value)


def test_unknown_key_in_dict():
    with pytest.raises(AdapterConfigError, match="'foo'"):
        AdapterConfig.from_dict({"architecture": "lora", "foo": 1})


@pytest.mark.parametrize("text,field", [
    ("lora[r=0]", "r"), ("lora[attn_matrices=['x']]", "attn_matrices"), ("lora[composition_mode='mul']",
                                                                        "composition_mode"),
    ("pfeiffer[non_linearity='foo']", "non_linearity"), ("pfeiffer[reduction_factor=-1]", "reduction_factor"),
    ("pfeiffer[residual_before_ln='x']", "residual_before_ln"), ("ia3[r=4]", "r"),
    ("pfeiffer[inv_adapter='glow']", "inv_adapter"), ("lora[dropout=1.5]", "dropout"),
])
def test_validation_names_the_field(text, field):
    with pytest.raises(AdapterConfigError) as err:
        resolve_config(text)
    assert field in str(err.value)


def test_bad_config_string_syntax():
    with pytest.raises(AdapterConfigError, match="cannot parse"):
        resolve_config("lora[r=]")
    with pytest.raises(AdapterConfigError, match="not a literal"):
        resolve_config("lora[r=__import__('os')]")
