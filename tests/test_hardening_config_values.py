"""Every field of every config (adapter, head, fusion) is checked for type, range and finiteness; bad values are
an AdapterConfigError naming the field, and the checkpoint readers turn them into a CheckpointError."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

import adapterkit
from adapterkit import AdapterConfigError, AdapterError, AutoAdapterModel, CheckpointError
from adapterkit.blocks import Average, BatchSplit, Fuse, Parallel, Split, Stack
from adapterkit.configs import CONFIG_CLASSES, AdapterConfig, ConfigUnion, resolve_config
from adapterkit.fusion.config import AdapterFusionConfig
from adapterkit.heads.registry import HEAD_TYPES, build_head

from ckpt_helpers import model_with
from conftest import tiny_config

# values wrong for every field: NaN / inf, nested lists, a dict, a string no field allows, a non-JSON object
BAD = [float("nan"), float("inf"), -float("inf"), [[1]], {"bad": [1]}, "no-such-value", object()]


def _required(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]


def config_classes():
    """Every config class with defaults (ReftConfig, like the package's, has none: its subclasses do)."""
    return sorted({cls for cls in CONFIG_CLASSES.values() if isinstance(cls, type) and issubclass(cls, AdapterConfig)
                   and not issubclass(cls, ConfigUnion) and cls is not AdapterConfig and not _required(cls)},
                  key=lambda c: c.__name__)


def test_only_reft_s_base_config_has_required_fields():
    abstract = {cls.__name__ for cls in CONFIG_CLASSES.values() if isinstance(cls, type)
                and issubclass(cls, AdapterConfig) and not issubclass(cls, ConfigUnion) and _required(cls)}
    assert abstract == {"ReftConfig"}
    with pytest.raises(AdapterConfigError, match="ReftConfig needs layers, orthogonality, prefix_positions, r, "
                                                 "suffix_positions"):
        AdapterConfig.from_dict({"architecture": "reft"})


CASES = [(cls, f.name) for cls in config_classes() for f in dataclasses.fields(cls)]


@pytest.mark.parametrize("cls,field", CASES, ids=[f"{c.__name__}.{f}" for c, f in CASES])
def test_every_adapter_config_field_is_checked(cls, field):
    assert cls()  # the defaults are valid
    # a regex field (peft's target_modules) takes any string that compiles: an unbalanced one is its bad string
    for bad in BAD if field != "target_modules" else [b if b != "no-such-value" else "(" for b in BAD]:
        with pytest.raises(AdapterConfigError, match=rf"\b{field}\b"):
            cls(**{field: bad})


def test_numbers_are_finite_by_default():
    for text in ("lora[alpha=inf]", "lora[alpha=1e999]", "seq_bn[scaling=float('nan')]"):
        with pytest.raises(AdapterConfigError):
            resolve_config(text)
    with pytest.raises(AdapterConfigError, match="scaling"):
        adapterkit.configs.BnConfig(scaling=float("nan"))
    with pytest.raises(AdapterConfigError, match="reduction_factor"):
        adapterkit.configs.SeqBnConfig(reduction_factor=float("nan"))
    with pytest.raises(AdapterConfigError, match="reduction_factor"):
        adapterkit.configs.SeqBnConfig(reduction_factor={"default": 16, "1": float("nan")})
    with pytest.raises(AdapterConfigError, match="reduction_factor"):
        adapterkit.configs.SeqBnConfig(reduction_factor={"default": 16, "first": 2})


def test_config_string_refuses_duplicate_keys():
    with pytest.raises(AdapterConfigError, match="'r'.*twice|twice.*'r'"):
        resolve_config("lora[r=8,r=9]")


@pytest.mark.parametrize("data", [[1], "lora", 5, {"architecture": ["lora"]}, {"architecture": "union", "configs": [5]},
                                  {"architecture": "lora", 1: 2}, {"architecture": "lora", "r": float("nan")}])
def test_from_dict_refuses_malformed_dicts(data):
    with pytest.raises(AdapterConfigError):
        AdapterConfig.from_dict(data)


# -- heads ---------------------------------------------------------------------------------------------------
HEAD_CASES = [(t, k) for t, cls in sorted(HEAD_TYPES.items()) for k in sorted(cls.defaults)]


@pytest.mark.parametrize("head_type,key", HEAD_CASES, ids=[f"{t}.{k}" for t, k in HEAD_CASES])
def test_every_head_config_key_is_checked(head_type, key):
    for bad in BAD + [-1, "2", True] if key not in ("bias", "use_pooler", "layer_norm", "shift_labels",
                                                     "multilabel") else BAD + [1, "yes"]:
        if key in ("activation_function",) and bad in (True,):
            continue
        with pytest.raises(AdapterConfigError, match=rf"\b{key}\b"):
            build_head("h", {"head_type": head_type, key: bad}, tiny_config())


@pytest.mark.parametrize("num_labels", [-1, "2", 0, 2.5, float("nan")])
def test_head_num_labels(num_labels):
    model = AutoAdapterModel.from_config(tiny_config())
    with pytest.raises(AdapterConfigError, match="num_labels"):
        model.add_classification_head("cls", num_labels=num_labels)


# -- fusion --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(AdapterFusionConfig)])
def test_every_fusion_config_field_is_checked(field):
    for bad in BAD + [-1, "1"]:
        with pytest.raises(AdapterConfigError, match=rf"\b{field}\b"):
            AdapterFusionConfig.from_dict({field: bad})


@pytest.mark.parametrize("data", [[1], "x", {1: True}])
def test_fusion_from_dict_refuses_non_dicts(data):
    with pytest.raises(AdapterConfigError):
        AdapterFusionConfig.from_dict(data)


# -- composition blocks --------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [lambda: Stack("p", None), lambda: Parallel("a", 3), lambda: Fuse("a", 1.5),
                                  lambda: Average("a", {"b"}), lambda: Split("a", None, splits=2),
                                  lambda: BatchSplit("a", object(), batch_sizes=1), lambda: Stack("a", [None])])
def test_blocks_refuse_children_that_are_not_names_or_blocks(make):
    with pytest.raises(AdapterError, match="child"):
        make()


@pytest.mark.parametrize("weights", [[float("nan"), 1], [float("inf"), 1], ["x", 1], [1e308, 1e308], [None, 1]])
def test_average_weights_are_finite_numbers(weights):
    with pytest.raises(AdapterError, match="weights"):
        Average("a", "b", weights=weights)
    model = model_with("bert", "lora", name="a")
    model.add_adapter("b", config="lora")
    with pytest.raises(AdapterError, match="weights"):
        model.average_adapter("c", ["a", "b"], weights=weights)


# -- checkpoints ---------------------------------------------------------------------------------------------
def edit(path, **changes):
    data = json.loads(path.read_text())
    for key, value in changes.items():
        target = data
        *parents, last = key.split("__")
        for p in parents:
            target = target[p]
        target[last] = value
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("fmt,changes", [
    ("adapterkit", {"weights": "x"}), ("adapterkit", {"weights": {"sha256": 5}}),
    ("adapterkit", {"format_version": True}), ("adapterkit", {"format_version": 0}),
    ("adapterkit", {"format_version": -7}), ("adapterkit", {"format_version": 1.0}),
    ("adapterkit", {"config__alpha": math.inf}), ("adapterkit", {"config__r": "8"}),
    ("peft", {"peft_type": ["LORA"]}), ("peft", {"auto_mapping": "x"}), ("peft", {"rank_pattern": [1]}),
    ("peft", {"lora_alpha": math.nan}), ("peft", {"use_rslora": "yes"}), ("peft", {"r": [8]}),
    ("adapterhub", {"config__architecture": ["lora"]}), ("adapterhub", {"config__non_linearity": ["relu"]}),
    ("adapterhub", {"config__alpha": math.nan}), ("adapterhub", {"version": ["1"]}),
])
def test_checkpoint_configs_with_bad_values(tmp_path, fmt, changes):
    model_with("bert", "lora").save_adapter(tmp_path, "a", format=fmt)
    edit(tmp_path / "adapter_config.json", **changes)
    with pytest.raises(CheckpointError, match="adapter_config.json"):
        model_with("bert", "lora", name="existing").load_adapter(tmp_path)


def test_adapterhub_bottleneck_bad_values(tmp_path):
    model_with("bert", "seq_bn").save_adapter(tmp_path, "a", format="adapterhub")
    for changes in ({"config__reduction_factor": math.nan}, {"config__invertible_adapter": "x"}):
        edit(tmp_path / "adapter_config.json", **changes)
        with pytest.raises(CheckpointError, match="adapter_config.json"):
            model_with("bert", "seq_bn", name="existing").load_adapter(tmp_path)


@pytest.mark.parametrize("changes", [{"format_version": True}, {"format_version": 0}, {"format_version": 99},
                                     {"config__num_labels": -1}, {"config__num_labels": "2"}, {"name": ["x"]},
                                     {"config__label2id": "x"}, {"config__label2id": {"a": "b"}}])
def test_head_checkpoint_bad_values(tmp_path, changes):
    model = AutoAdapterModel.from_config(tiny_config())
    model.add_classification_head("cls", num_labels=3)
    model.save_head(tmp_path, "cls")
    edit(tmp_path / "head_config.json", **changes)
    with pytest.raises(AdapterError, match="head_config.json"):
        model.load_head(tmp_path)


def test_load_as_empty_string_is_refused(tmp_path):
    model = model_with("bert", "seq_bn", name="a")
    model.save_adapter(tmp_path / "a", "a")
    with pytest.raises(AdapterError, match="''"):
        model.load_adapter(tmp_path / "a", load_as="")
    heads = AutoAdapterModel.from_config(tiny_config())
    heads.add_classification_head("cls")
    heads.save_head(tmp_path / "h", "cls")
    with pytest.raises(AdapterError, match="''"):
        heads.load_head(tmp_path / "h", load_as="")
    model.add_adapter("b", config="seq_bn")
    model.add_adapter_fusion(["a", "b"])
    model.save_adapter_fusion(tmp_path / "f", ["a", "b"])
    with pytest.raises(AdapterError, match="''"):
        model.load_adapter_fusion(tmp_path / "f", load_as="")
    assert torch.is_tensor(next(model.parameters()))
