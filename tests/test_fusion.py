"""AdapterFusion API: add / train / save / load, attentions, the value regulariser, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import adapterkit
from adapterkit import AdapterError, Fuse, Stack
from adapterkit.fusion import AdapterFusionConfig

from test_composition import batch, model_with, randomize, run


def fused_model(config="dynamic", adapters="pfeiffer"):
    model = model_with(configs={"a": adapters, "b": adapters, "c": "pfeiffer", "l": "lora"})
    name = model.add_adapter_fusion(Fuse("a", "b"), config=config)
    randomize(model.adapterkit_fusion[name], seed=5, scale=0.1)
    return model


def test_add_places_layers_where_all_fused_adapters_are():
    model = fused_model(adapters="houlsby")
    fusion = model.adapterkit_fusion["a,b"]
    assert {(i, loc) for i, group in fusion.layers.items() for loc in group} == {
        (i, loc) for i in ("0", "1") for loc in ("mh_adapter", "output_adapter")}
    assert model.adapter_fusions == {"a,b": ["a", "b"]}
    keys = {k for k in model.state_dict() if k.startswith("adapterkit_fusion.")}
    assert "adapterkit_fusion.a,b.layers.1.mh_adapter.value.weight" in keys
    static = model_with(configs={"a": "pfeiffer", "b": "pfeiffer"})
    static.add_adapter_fusion(["a", "b"], config="static", name="ab")
    assert static.adapterkit_fusion["ab"].layers["0"]["output_adapter"].value is None


def test_fuse_changes_the_output_and_runs_in_a_stack():
    model = fused_model()
    inputs = batch()
    fused = run(model, inputs, Fuse("a", "b"))
    assert (fused - run(model, inputs, "a")).abs().max() > 1e-3
    stacked = run(model, inputs, Stack(Fuse("a", "b"), "c"))
    assert (stacked - fused).abs().max() > 1e-3


def test_attentions_are_returned_with_the_documented_shape():
    model = fused_model(adapters="houlsby")
    model.set_active_adapters(Fuse("a", "b"))
    inputs = batch(rows=3, seq=9)
    with torch.no_grad():
        out = model(**inputs, output_adapter_fusion_attentions=True, output_adapter_gating_scores=True)
        plain = model(**inputs)
        as_tuple = model(**inputs, output_adapter_fusion_attentions=True, return_dict=False)
    attentions = out.adapter_fusion_attentions
    assert set(attentions) == {"a,b"} and set(attentions["a,b"]) == {0, 1}
    for layer in (0, 1):
        assert set(attentions["a,b"][layer]) == {"mh_adapter", "output_adapter"}
        for value in attentions["a,b"][layer].values():
            assert isinstance(value, np.ndarray) and value.shape == (3, 9, 2)
            np.testing.assert_allclose(value.sum(-1), 1.0, atol=1e-6)
    assert out.adapter_gating_scores == {}  # asked for, none gated
    assert "adapter_fusion_attentions" not in plain
    assert set(as_tuple[-1]) == {"a,b"}
    assert model.adapter_state.record.fusion_attentions is None


def test_train_adapter_fusion_trains_only_the_fusion():
    model = fused_model()
    model.add_adapter_fusion(["a", "c"])
    model.train_adapter_fusion(Fuse("a", "b"))
    trainable = {n.split(".")[1] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"a,b"}
    assert model.training and model.active_adapters == Fuse("a", "b")
    out = model(**batch()).last_hidden_state
    loss = out.pow(2).mean() + model.get_fusion_regularization_loss()
    loss.backward()
    layer = model.adapterkit_fusion["a,b"].layers["0"]["output_adapter"]
    assert layer.query.weight.grad.abs().sum() > 0 and layer.value.weight.grad.abs().sum() > 0
    model.train_adapter_fusion(Fuse("a", "b"), unfreeze_adapters=True)
    assert all(p.requires_grad for p in model.adapterkit["a"].parameters())
    assert not any(p.requires_grad for p in model.adapterkit["c"].parameters())
    model.train_adapter("c")  # training an adapter freezes every fusion
    assert not any(p.requires_grad for p in model.adapterkit_fusion.parameters())
    model.freeze_model(False)  # unfreezing the base model leaves fusions alone
    assert not any(p.requires_grad for p in model.adapterkit_fusion.parameters())


def test_regularization_loss_pulls_the_value_matrix_to_identity():
    model = model_with(configs={"a": "pfeiffer", "b": "pfeiffer"})
    model.add_adapter_fusion(Fuse("a", "b"))
    model.train_adapter_fusion(Fuse("a", "b"))
    at_init = model.get_fusion_regularization_loss()
    assert 0 < at_init.item() < 1e-9  # identity with 1e-6 off the diagonal
    value = model.adapterkit_fusion["a,b"].layers["1"]["output_adapter"].value.weight
    with torch.no_grad():
        value.add_(0.1)
    expected = 0.01 * (torch.eye(32) - value).pow(2).sum() + at_init / 2
    torch.testing.assert_close(model.get_fusion_regularization_loss(), expected, rtol=1e-5, atol=0)
    model.add_adapter_fusion(Fuse("a", "b"), config="static", overwrite_ok=True)
    model.train_adapter_fusion(Fuse("a", "b"))
    assert model.get_fusion_regularization_loss() is None  # no value matrix
    model.add_adapter_fusion(Fuse("a", "b"), config={"regularization": False}, overwrite_ok=True)
    model.train_adapter_fusion(Fuse("a", "b"))
    assert model.get_fusion_regularization_loss() is None  # switched off in the config (the anchors ignore it)


def test_temperature_anneals_in_training_only():
    model = model_with(configs={"a": "pfeiffer", "b": "pfeiffer"})
    model.add_adapter_fusion(Fuse("a", "b"), config=AdapterFusionConfig(temperature=True))
    layer = model.adapterkit_fusion["a,b"].layers["0"]["output_adapter"]
    run(model, batch(), Fuse("a", "b"))
    assert layer.temperature == 50.0
    model.train_adapter_fusion(Fuse("a", "b"))
    model(**batch())
    model(**batch())
    assert layer.temperature == pytest.approx(49.9)


def test_save_and_load_round_trip_is_exact(tmp_path):
    model = fused_model(config="static", adapters="houlsby")
    inputs = batch()
    expected = run(model, inputs, Fuse("a", "b"))
    model.save_adapter_fusion(tmp_path / "f", Fuse("a", "b"))
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == ["adapter_fusion.safetensors",
                                                                   "adapter_fusion_config.json"]
    saved = json.loads((tmp_path / "f" / "adapter_fusion_config.json").read_text())
    assert saved["adapter_names"] == ["a", "b"] and saved["config"]["value"] is False
    weights = {k: v.clone() for k, v in model.adapterkit_fusion["a,b"].state_dict().items()}
    model.delete_adapter_fusion("a,b")
    assert model.adapter_fusions == {}
    assert model.load_adapter_fusion(tmp_path / "f", set_active=True) == "a,b"
    loaded = model.adapterkit_fusion["a,b"].state_dict()
    assert weights.keys() == loaded.keys() and all(torch.equal(weights[k], loaded[k]) for k in weights)
    assert model.adapterkit_fusion["a,b"].config == AdapterFusionConfig.from_dict(saved["config"])
    torch.testing.assert_close(run(model, inputs), expected, atol=0, rtol=0)
    assert model.load_adapter_fusion(tmp_path / "f", load_as="copy") == "copy"
    assert model.adapter_fusions["copy"] == ["a", "b"]


@pytest.mark.parametrize("format", ["adapterkit", "adapterhub"])
def test_save_all_adapter_fusions(tmp_path, format):
    model = fused_model()
    model.add_adapter_fusion(Fuse("b", "a"))
    randomize(model.adapterkit_fusion["b,a"], seed=6, scale=0.1)
    assert model.save_all_adapter_fusions(tmp_path, format=format) == ["a,b", "b,a"]
    inputs = batch()
    expected = {name: run(model, inputs, Fuse(*name.split(","))) for name in ("a,b", "b,a")}
    model.delete_adapter_fusion("a,b")
    model.delete_adapter_fusion("b,a")
    for name in ("a,b", "b,a"):
        assert model.load_adapter_fusion(tmp_path / name) == name
        torch.testing.assert_close(run(model, inputs, Fuse(*name.split(","))), expected[name], atol=0, rtol=0)


def test_failed_save_keeps_the_previous_files(tmp_path, monkeypatch):
    model = fused_model()
    model.save_adapter_fusion(tmp_path, "a,b")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with torch.no_grad():
        model.adapterkit_fusion["a,b"].layers["0"]["output_adapter"].query.weight.add_(1.0)

    def broken(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr("adapterkit.io.fusion.save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        model.save_adapter_fusion(tmp_path, "a,b")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no temp files left either


def test_load_refuses_what_does_not_fit(tmp_path):
    model = fused_model()
    model.save_adapter_fusion(tmp_path / "f", "a,b")
    with pytest.raises(AdapterError, match="is not an AdapterFusion directory"):
        model.load_adapter_fusion(tmp_path)
    other = model_with(configs={"a": "houlsby", "b": "houlsby"})
    with pytest.raises(AdapterError, match="do not fit fusion"):  # mh_adapter layers missing in the file
        other.load_adapter_fusion(tmp_path / "f")
    assert other.adapter_fusions == {}
    missing = model_with(configs={"a": "pfeiffer"})
    with pytest.raises(AdapterError, match="'b' does not exist"):
        missing.load_adapter_fusion(tmp_path / "f")


def test_failed_load_keeps_an_existing_fusion_of_that_name(tmp_path):
    """Weights that do not fit are found before the model changes: the fusion already there stays, active."""
    model = fused_model()
    model.save_adapter_fusion(tmp_path / "f", "a,b")
    torch.save({"nonsense": torch.zeros(1)}, tmp_path / "f" / "pytorch_model_adapter_fusion.bin")
    (tmp_path / "f" / "adapter_fusion.safetensors").unlink()
    model.set_active_adapters(Fuse("a", "b"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(AdapterError, match="has no adapterkit counterpart"):
        model.load_adapter_fusion(tmp_path / "f", overwrite_ok=True)
    save_file({"layers.0.output_adapter.query.weight": torch.zeros(3, 3)}, tmp_path / "f" / "adapter_fusion.safetensors")
    with pytest.raises(AdapterError, match="do not fit fusion"):
        model.load_adapter_fusion(tmp_path / "f", overwrite_ok=True)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert model.adapter_fusions == {"a,b": ["a", "b"]} and model.active_adapters == Fuse("a", "b")


def test_fusion_errors():
    model = fused_model()
    with pytest.raises(AdapterError, match="already exists"):
        model.add_adapter_fusion("a,b")
    with pytest.raises(AdapterError, match="fuses bottleneck adapters; 'l' is a lora adapter"):
        model.add_adapter_fusion(["a", "l"])
    with pytest.raises(AdapterError, match="'zz' does not exist"):
        model.add_adapter_fusion(["a", "zz"])
    with pytest.raises(AdapterError, match="over adapter names"):
        model.add_adapter_fusion(Fuse(Stack("a", "c"), "b"))
    with pytest.raises(AdapterError, match="no AdapterFusion named 'x'"):
        model.delete_adapter_fusion("x")
    with pytest.raises(AdapterError, match="needs a Fuse block"):
        model.train_adapter_fusion(Stack("a", "b"))
    with pytest.raises(adapterkit.AdapterConfigError, match="valid names: static, dynamic"):
        model.add_adapter_fusion(["a", "c"], config="fancy")
    with pytest.raises(adapterkit.AdapterConfigError, match="at least one of query, key, value"):
        AdapterFusionConfig(query=False, key=False, value=False)
