"""Every JSON file adapterkit reads goes through one reader that refuses absurd nesting with a CheckpointError
naming the file (json.loads alone raises RecursionError on 100k nested lists)."""

from __future__ import annotations

import json

import pytest
from transformers import BertConfig

import adapterkit
from adapterkit import AdapterError, AutoAdapterModel, CheckpointError
from adapterkit.cli.main import main
from adapterkit.io import files

from ckpt_helpers import model_with
from conftest import tiny_config

DEEP = "[" * 100_000 + "]" * 100_000


def deepen(path, key="config"):
    """Replace `key` in the JSON object at `path` with 100k nested lists."""
    text = path.read_text()
    data = json.loads(text)
    data[key] = "__DEEP__"
    path.write_text(json.dumps(data).replace('"__DEEP__"', DEEP))


def test_parse_json_refuses_deep_nesting_and_names_the_source(tmp_path):
    parse_json, read_json, MAX_JSON_DEPTH = files.parse_json, files.read_json, files.MAX_JSON_DEPTH
    with pytest.raises(CheckpointError, match="somefile.json.*nest"):
        parse_json(DEEP, "somefile.json")
    just_too_deep = "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1)
    with pytest.raises(CheckpointError, match="nest"):
        parse_json(just_too_deep, "x.json")
    assert parse_json("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH, "x.json") is not None
    deep_dicts = '{"a": ' * 100_000 + "1" + "}" * 100_000
    (tmp_path / "d.json").write_text(deep_dicts)
    with pytest.raises(CheckpointError, match="d.json"):
        read_json(tmp_path / "d.json")


@pytest.mark.parametrize("fmt", ["adapterkit", "adapterhub", "peft"])
def test_adapter_config(tmp_path, fmt):
    model_with("bert", "lora").save_adapter(tmp_path, "a", format=fmt)
    deepen(tmp_path / "adapter_config.json", "config" if fmt != "peft" else "target_modules")
    with pytest.raises(CheckpointError, match="adapter_config.json"):
        model_with("bert", "lora").load_adapter(tmp_path)


def test_head_config(tmp_path):
    model = AutoAdapterModel.from_config(tiny_config())
    model.add_classification_head("cls", num_labels=3)
    model.save_head(tmp_path, "cls")
    deepen(tmp_path / "head_config.json")
    with pytest.raises(CheckpointError, match="head_config.json"):
        model.load_head(tmp_path)


def test_fusion_config(tmp_path):
    model = model_with("bert", "seq_bn", name="a")
    model.add_adapter("b", config="seq_bn")
    model.add_adapter_fusion(["a", "b"])
    model.save_adapter_fusion(tmp_path, ["a", "b"])
    deepen(tmp_path / "adapter_fusion_config.json")
    with pytest.raises(CheckpointError, match="adapter_fusion_config.json"):
        model.load_adapter_fusion(tmp_path)


def test_cli_summary_model_config(tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_type": "bert", "label2id": "__DEEP__"}).replace('"__DEEP__"', DEEP))
    assert main(["summary", "--model", str(config), "--adapter", "lora"]) == 2
    assert "config.json" in capsys.readouterr().err


def test_cli_convert_inputs(tmp_path, capsys):
    model_dir = tmp_path / "model"
    AutoAdapterModel.from_config(BertConfig(**{**tiny_config().to_dict()})).base_model.save_pretrained(model_dir)
    adapter_dir = tmp_path / "adapter"
    model_with("bert", "lora").save_adapter(adapter_dir, "a")
    deepen(adapter_dir / "adapter_config.json")
    assert main(["convert", "--adapter-dir", str(adapter_dir), "--to", "peft", "--model", str(model_dir),
                 "--output-dir", str(tmp_path / "out")]) == 2
    assert "adapter_config.json" in capsys.readouterr().err
    deepen(model_dir / "config.json", "label2id")
    assert main(["convert", "--adapter-dir", str(adapter_dir), "--to", "peft", "--model", str(model_dir),
                 "--output-dir", str(tmp_path / "out")]) == 2
    assert "config.json" in capsys.readouterr().err


def test_errors_are_adapter_errors():
    assert issubclass(CheckpointError, AdapterError) and adapterkit.CheckpointError is CheckpointError


def test_cli_jsonl_data(tmp_path):
    from adapterkit.cli.data import DataError, load_table
    (tmp_path / "d.jsonl").write_text('{"text": "a", "label": 1}\n{"text": ' + DEEP + ', "label": 0}\n')
    with pytest.raises(DataError, match=r"d\.jsonl: cannot be read as JSON Lines.*depth"):
        load_table(tmp_path / "d.jsonl")
