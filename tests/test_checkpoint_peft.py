"""Adapters move between adapterkit and the real `peft` package both ways, with outputs within 1e-5."""

from __future__ import annotations

import json
import warnings

import peft  # a test dependency (pyproject extra "test"): these checks must run, never skip
import pytest
import torch

import adapterkit
from adapterkit import CheckpointError

from ckpt_helpers import assert_unchanged, model_with, outputs, snapshot
from conftest import tiny_model

ATOL = 1e-5


def close(a, b):
    return (a - b).abs().max().item()


def load_in_peft(base, directory):
    """peft's own loading of a PEFT directory onto `base`, in eval mode (its warnings about the tiny models muted)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return peft.PeftModel.from_pretrained(base, directory).eval()


@pytest.mark.parametrize("arch", ["bert", "roberta"])
@pytest.mark.parametrize("method", ["lora", "lora_all", "ia3", "ia3_alpha",
                                    "ia3[intermediate_lora=False,output_lora=True,leave_out=[0]]"])
def test_export_loads_in_peft(arch, method, batch, tmp_path):
    model = model_with(arch, method)
    expected = outputs(model, batch)
    model.save_adapter(tmp_path, "a", format="peft")
    peft_model = load_in_peft(tiny_model(arch), tmp_path)
    with torch.no_grad():
        got = peft_model(**batch).last_hidden_state
    with torch.no_grad(), peft_model.disable_adapter():
        assert close(peft_model(**batch).last_hidden_state, expected) > 1e-2  # peft did load something
    assert close(got, expected) <= ATOL


def _peft_made(base, config, tmp_path, seed=0):
    """An adapter made, randomised and saved by peft on `base` (a model, or "bert" / "roberta" for the tiny one);
    returns (its directory, the peft model)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft_model = peft.get_peft_model(tiny_model(base) if isinstance(base, str) else base, config).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name or "ia3_l" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3 + (1.0 if "ia3_l" in name else 0.0))
    peft_model.save_pretrained(tmp_path)
    return tmp_path / "default" if (tmp_path / "default").is_dir() else tmp_path, peft_model


PEFT_CONFIGS = {
    "lora": lambda: peft.LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"]),
    "lora_ffn": lambda: peft.LoraConfig(r=2, lora_alpha=5, lora_dropout=0.1,
                                        target_modules=["query", "key", "attention.output.dense", "intermediate.dense"]),
    "lora_layer0": lambda: peft.LoraConfig(r=4, lora_alpha=4, target_modules=["value"], layers_to_transform=[0]),
    "lora_rslora": lambda: peft.LoraConfig(r=4, lora_alpha=8, target_modules=["query"], use_rslora=True),
    "ia3": lambda: peft.IA3Config(target_modules=["key", "value", "intermediate.dense"], feedforward_modules=[]),
}


@pytest.mark.parametrize("arch", ["bert", "roberta"])
@pytest.mark.parametrize("kind", sorted(PEFT_CONFIGS))
def test_peft_made_adapter_loads_in_adapterkit(arch, kind, batch, tmp_path):
    path, peft_model = _peft_made(arch, PEFT_CONFIGS[kind](), tmp_path)
    with torch.no_grad():
        expected = peft_model(**batch).last_hidden_state
    model = adapterkit.init(tiny_model(arch))
    name = model.load_adapter(path, load_as="p", set_active=True)
    got = outputs(model, batch)
    with adapterkit.AdapterSetup(None):
        assert close(outputs(model, batch), expected) > 1e-2
    assert close(got, expected) <= ATOL
    if kind == "lora_layer0":
        assert model.adapters_config[name].leave_out == [1]


def test_peft_round_trip_back_to_adapterkit_is_exact(batch, tmp_path):
    path, _ = _peft_made("bert", PEFT_CONFIGS["lora_ffn"](), tmp_path / "in")
    model = adapterkit.init(tiny_model("bert"))
    model.load_adapter(path, load_as="p", set_active=True)
    expected = outputs(model, batch)
    model.save_adapter(tmp_path / "out", "p", format="peft")
    other = adapterkit.init(tiny_model("bert"))
    other.load_adapter(tmp_path / "out", load_as="p", set_active=True)
    assert torch.equal(outputs(other, batch), expected)


def test_peft_default_ia3_with_feedforward_modules_converts_both_ways(batch, tmp_path):
    """peft's default IA3 for BERT scales the *input* of its feedforward modules (`output.dense`, which also
    matches `attention.output.dense`): adapterkit's `scale_inputs=["o", "output"]`, exact both ways."""
    path, peft_model = _peft_made("bert", peft.IA3Config(), tmp_path / "in")
    assert json.loads((path / "adapter_config.json").read_text())["feedforward_modules"]
    with torch.no_grad():
        expected = peft_model(**batch).last_hidden_state
    model = adapterkit.init(tiny_model("bert"))
    name = model.load_adapter(path, load_as="p", set_active=True)
    config = model.adapters_config[name]
    assert config.scale_inputs == ["o", "output"] and config.attn_matrices == ["k", "v", "o"]
    assert close(outputs(model, batch), expected) <= ATOL
    model.save_adapter(tmp_path / "out", "p", format="peft")
    again = load_in_peft(tiny_model("bert"), tmp_path / "out")
    with torch.no_grad():
        assert close(again(**batch).last_hidden_state, expected) <= ATOL


def test_peft_ia3_scaling_inputs_of_only_some_modules_of_a_kind_loads_by_module_name(tmp_path, batch):
    """No location config scales the input of some output projections and the output of others: the file loads
    as a module-targeted adapter (target_modules / feedforward_modules, as peft) with peft's outputs."""
    config = peft.IA3Config(target_modules=["key", "output.dense", "layer.0.output.dense"],
                            feedforward_modules=["layer.0.output.dense"])
    path, peft_model = _peft_made("bert", config, tmp_path)
    with torch.no_grad():
        expected = peft_model(**batch).last_hidden_state
    model = adapterkit.init(tiny_model("bert"))
    name = model.load_adapter(path, set_active=True)
    assert model.adapters_config[name].feedforward_modules == ["layer.0.output.dense"]
    assert close(outputs(model, batch), expected) <= ATOL


@pytest.mark.parametrize("option,value,message", [
    ("lora_bias", True, "lora_bias=True is not supported"),
    ("bias", "all", "bias='all'"),
    ("init_lora_weights", "loftq", "init_lora_weights='loftq' is not supported"),
    ("rank_pattern", {"query": 0}, r"rank_pattern\['query'\]=0 must be an integer >= 1"),
])
def test_unsupported_peft_lora_options_are_refused(option, value, message, tmp_path):
    path, _ = _peft_made("bert", PEFT_CONFIGS["lora"](), tmp_path)
    data = json.loads((path / "adapter_config.json").read_text())
    data[option] = value
    (path / "adapter_config.json").write_text(json.dumps(data))
    model = model_with("bert", "lora", name="existing")
    before = snapshot(model)
    with pytest.raises(CheckpointError, match=message):
        model.load_adapter(path)
    assert_unchanged(model, before)


def test_unsupported_peft_type(tmp_path):
    path, _ = _peft_made("bert", PEFT_CONFIGS["lora"](), tmp_path)
    data = json.loads((path / "adapter_config.json").read_text())
    (path / "adapter_config.json").write_text(json.dumps({**data, "peft_type": "BOFT"}))
    model = adapterkit.init(tiny_model("bert"))
    with pytest.raises(CheckpointError, match="PEFT type 'BOFT' is not supported; supported: LORA, IA3, VERA, LOHA, LOKR"):
        model.load_adapter(path)


def test_peft_prefix_tuning_is_ours_with_shifted_positions(tmp_path):
    """Why PEFT prefix tuning is refused both ways: with the same prefix values, peft's output is adapterkit's only
    when adapterkit's positions are offset by the prefix length (peft's prefix is a cache)."""
    P, seq = 3, 7
    base = tiny_model("bert")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft_model = peft.get_peft_model(tiny_model("bert"), peft.PrefixTuningConfig(
            task_type=peft.TaskType.FEATURE_EXTRACTION, num_virtual_tokens=P, prefix_projection=False)).eval()
    peft_model.base_model.load_state_dict(base.state_dict())
    encoder = peft_model.prompt_encoder["default"].embedding  # (P, layers * 2 * hidden): layer-major, key first
    with torch.no_grad():
        encoder.weight.normal_(0, 1)
    ours = adapterkit.init(base)
    ours.add_adapter("p", config=adapterkit.PrefixTuningConfig(prefix_length=P, flat=True), set_active=True)
    with torch.no_grad():
        ours.adapterkit["p"].shared["prefix"].control_trans.copy_(encoder.weight.reshape(-1))
    ids = torch.randint(1, 99, (2, seq), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = peft_model(input_ids=ids).last_hidden_state
        shifted = ours.eval()(input_ids=ids, position_ids=torch.arange(P, P + seq)[None]).last_hidden_state
        plain = ours(input_ids=ids).last_hidden_state
    assert close(theirs, shifted) <= ATOL
    assert close(theirs, plain) > 1e-2
    with pytest.raises(adapterkit.AdapterConfigError, match="shifts its position ids by the prefix length"):
        ours.save_adapter(tmp_path / "out", "p", format="peft")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "adapter_config.json").write_text(json.dumps({"peft_type": "PREFIX_TUNING",
                                                                     "num_virtual_tokens": P}))
    with pytest.raises(CheckpointError, match="PEFT type 'PREFIX_TUNING' is not supported \\(PEFT prefix tuning "
                                              "feeds its prefix to the model as a key/value cache"):
        ours.load_adapter(tmp_path / "in")
