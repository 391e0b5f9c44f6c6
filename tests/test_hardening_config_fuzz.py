"""Property tests: any string given as a config string, and any JSON value given as a config dict (adapterkit,
AdapterHub or PEFT form), gives a valid config or an AdapterConfigError / CheckpointError, never another
exception. Short by default (200 examples each); raise HYPOTHESIS_EXAMPLES for a longer hunt."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapterkit import AdapterConfigError, CheckpointError
from adapterkit.configs import ADAPTER_CONFIG_MAP, CONFIG_CLASSES, AdapterConfig, resolve_config
from adapterkit.fusion.config import AdapterFusionConfig
from adapterkit.io import peft
from adapterkit.io.adapterhub import directory as hub_directory
from adapterkit.io.adapterhub.config import config_from_adapterhub
from adapterkit.io.common import parse_config

from ckpt_helpers import model_with

EXAMPLES = int(os.environ.get("HYPOTHESIS_EXAMPLES", "200"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                                  HealthCheck.too_slow])
# the whole-reader tests build sites from a model per example: half the examples keep them quick
READER_SETTINGS = settings(SETTINGS, max_examples=max(1, EXAMPLES // 2))
OK_ERRORS = (AdapterConfigError, CheckpointError)

FIELDS = sorted({f.name for cls in CONFIG_CLASSES.values() if isinstance(cls, type) and issubclass(cls, AdapterConfig)
                 and dataclasses.is_dataclass(cls) for f in dataclasses.fields(cls)})
NAMES = sorted(ADAPTER_CONFIG_MAP)
METHODS = sorted(AdapterConfig._by_method) + ["glow", ""]

scalars = st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats() | st.text(max_size=12) \
    | st.sampled_from(NAMES + METHODS + ["q", "k", "v", "o", "relu", "nice", "default", "0", "1"])
keys = st.sampled_from(FIELDS + ["architecture", "configs", "peft_type"]) | st.text(max_size=8)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(keys, inner, max_size=5), max_leaves=20)
config_dicts = st.dictionaries(keys, json_values, max_size=8) | st.fixed_dictionaries(
    {"architecture": st.sampled_from(METHODS) | json_values}, optional={k: json_values for k in FIELDS[:40]})

# config strings: free text, and registered names with random overrides (literals, bare words, junk)
literal = st.recursive(st.integers(-10**9, 10**9).map(str) | st.floats().map(repr) | st.text(max_size=6).map(repr)
                       | st.sampled_from(["True", "False", "None", "gelu", "1e999", "-inf", "{1}", "{[1]}", "1j"]),
                       lambda inner: st.lists(inner, max_size=3).map(lambda xs: "[" + ",".join(xs) + "]"),
                       max_leaves=6)
override = st.tuples(st.sampled_from(FIELDS) | st.text(max_size=5), literal).map(lambda kv: f"{kv[0]}={kv[1]}")
structured = st.tuples(st.sampled_from(NAMES) | st.text(max_size=6), st.lists(override, max_size=4),
                       st.sampled_from(["", "]", "[", "|", "|lora", ",", ")"])).map(
    lambda t: f"{t[0]}[{','.join(t[1])}]{t[2]}")
config_strings = st.text(max_size=40) | structured


def valid_or_refused(make, *args):
    try:
        result = make(*args)
    except OK_ERRORS:
        return None
    return result


@SETTINGS
@given(config_strings)
def test_config_strings(text):
    config = valid_or_refused(resolve_config, text)
    assert config is None or isinstance(config, AdapterConfig)


@SETTINGS
@given(json_values | config_dicts)
def test_from_dict(data):
    config = valid_or_refused(AdapterConfig.from_dict, data)
    if config is not None:  # a config that was accepted round-trips
        assert AdapterConfig.from_dict(config.to_dict()) == config


@SETTINGS
@given(json_values | config_dicts)
def test_adapterhub_config_dicts(data):
    config = valid_or_refused(config_from_adapterhub, data)
    assert config is None or isinstance(config, AdapterConfig)


@SETTINGS
@given(json_values | st.dictionaries(st.sampled_from([f.name for f in dataclasses.fields(AdapterFusionConfig)])
                                     | st.text(max_size=5), json_values, max_size=5))
def test_fusion_config_dicts(data):
    config = valid_or_refused(AdapterFusionConfig.from_dict, data)
    assert config is None or isinstance(config, AdapterFusionConfig)


# -- whole checkpoint readers: the saved adapter_config.json with random changes ------------------------------
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    out = {}
    for fmt, method in (("peft", "lora"), ("peft", "ia3"), ("adapterhub", "lora"), ("adapterhub", "seq_bn")):
        path = tmp_path_factory.mktemp(f"{fmt}_{method}")
        model_with("bert", method).save_adapter(path, "a", format=fmt)
        out[fmt, method] = (path, json.loads((path / "adapter_config.json").read_text()))
    return out, model_with("bert", "seq_bn", name="existing")


PEFT_KEYS = ["peft_type", "r", "lora_alpha", "lora_dropout", "bias", "use_rslora", "use_dora", "rank_pattern",
             "alpha_pattern", "auto_mapping", "modules_to_save", "feedforward_modules", "target_modules",
             "layer_replication", "init_lora_weights"]
HUB_KEYS = ["config", "version", "name", "model_type", "hidden_size", "model_class", "type"]


def _changed(base: dict, changes: dict, nested: dict) -> dict:
    data = {**base, **changes}
    if "config" in base and isinstance(base["config"], dict) and nested:
        data["config"] = {**base["config"], **nested}
    return data


@READER_SETTINGS
@given(st.sampled_from(["lora", "ia3"]), st.dictionaries(st.sampled_from(PEFT_KEYS) | st.text(max_size=5),
                                                         json_values, max_size=4))
def test_peft_reader(saved, method, changes):
    (path, base), model = saved[0]["peft", method], saved[1]
    valid_or_refused(peft.read, model, path, _changed(base, changes, {}))


@READER_SETTINGS
@given(st.sampled_from(["lora", "seq_bn"]),
       st.dictionaries(st.sampled_from(HUB_KEYS), json_values, max_size=3),
       st.dictionaries(st.sampled_from(FIELDS + ["architecture", "invertible_adapter"]), json_values, max_size=4))
def test_adapterhub_reader(saved, method, changes, nested):
    (path, base), model = saved[0]["adapterhub", method], saved[1]
    valid_or_refused(hub_directory.read, model, path, _changed(base, changes, nested))


def test_parse_config_wraps_config_errors(tmp_path):
    with pytest.raises(CheckpointError, match="x.json"):
        parse_config(tmp_path / "x.json", AdapterConfig.from_dict, {"architecture": "lora", "r": "eight"})
