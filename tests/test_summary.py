"""adapter_summary on a roberta-base-shaped model (built on the meta device: no weights) vs the release notes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import RobertaConfig, RobertaModel

import adapterkit

# Rows copied from the adapter-transformers v3.1 release notes (the spec); ia3 per DESIGN.md (released default).
RELEASE_ROWS = """\
pfeiffer                 bottleneck          894,528       0.718       0       1
houlsby                  bottleneck        1,789,056       1.435       0       1
pfeiffer+inv             bottleneck        1,190,592       0.955       0       1
houlsby+inv              bottleneck        2,085,120       1.673       0       1
compacter++              bottleneck           28,576       0.023       0       1
compacter                bottleneck           57,088       0.046       0       1
prefix_tuning            prefix_tuning     9,872,384       7.920       0       1
prefix_tuning_flat       prefix_tuning       552,960       0.444       0       1
parallel                 bottleneck        7,091,712       5.689       0       1
scaled_parallel          bottleneck        7,091,724       5.690       0       1
lora                     lora                294,912       0.237       0       1"""
MAM_ROW = "mam                      union            22,493,984      18.046       0       1"
HEADER = "Name                     Architecture         #Param      %Param  Active   Train"
FULL = "Full model                               124,645,632     100.000               1"


def roberta_base():
    config = RobertaConfig(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5)
    with torch.device("meta"):
        return adapterkit.init(RobertaModel(config))


@pytest.fixture(scope="module")
def summary_model():
    model = roberta_base()
    with torch.device("meta"):
        for line in RELEASE_ROWS.splitlines():
            name = line.split()[0]
            model.add_adapter(name, config=name)
        model.add_adapter("ia3", config="ia3")
        model.add_adapter("ia3_attn", config=adapterkit.IA3Config(intermediate_lora=False))
        model.add_adapter("mam", config="mam")
        model.add_adapter("unipelt", config="unipelt")
    return model


def test_rows_match_release_notes(summary_model):
    lines = summary_model.adapter_summary().splitlines()
    assert lines[0] == "=" * 80 and lines[-1] == "=" * 80
    assert lines[1] == HEADER
    n = len(RELEASE_ROWS.splitlines())
    assert "\n".join(lines[3:3 + n]) == RELEASE_ROWS
    assert MAM_ROW in lines
    assert lines[-2] == FULL


def test_ia3_counts(summary_model):
    rows = {r["name"]: r for r in summary_model.adapter_summary(as_dict=True)}
    assert rows["ia3"]["#param"] == 55_296
    assert rows["ia3_attn"]["#param"] == 18_432
    assert f"{rows['ia3_attn']['%param']:.3f}" == "0.015"  # the release table's ia3 row
    assert rows["Full model"]["#param"] == 124_645_632
    assert rows["unipelt"]["#param"] == 11_083_376 and rows["unipelt"]["architecture"] == "union"
    assert f"{rows['unipelt']['%param']:.3f}" == "8.892"


def test_active_and_train_columns():
    model = roberta_base()
    with torch.device("meta"):
        model.add_adapter("a", config="lora")
        model.add_adapter("b", config="pfeiffer")
    model.train_adapter("a")
    rows = {r["name"]: r for r in model.adapter_summary(as_dict=True)}
    assert rows["a"]["active"] and rows["a"]["train"]
    assert not rows["b"]["active"] and not rows["b"]["train"]
    assert rows["Full model"]["train"] is False
    text = model.adapter_summary()
    assert "Full model                               124,645,632     100.000               0" in text


# The `adapters` package's own adapter_summary on roberta-base for its configs beyond the 3.1 notes
# (tools/make_summary_fixtures.py). VeRA / DvoRA: the package trains d and b as full (r x r) and (out x out)
# matrices; ours are the paper's and peft's vectors, so its count is ours plus the off-diagonals it adds.
PACKAGE = json.loads((Path(__file__).parent / "fixtures" / "adapters_summary.json").read_text())
DENSE_VECTORS = {"vera", "dvora"}
ARCHITECTURE = {"mtl_lora": "mtl_lora", "prompt_tuning": "prompt_tuning", "loreft": "reft", "noreft": "reft",
                "direft": "reft", "adapterplus": "bottleneck"}


@pytest.fixture(scope="module")
def package_rows():
    model = roberta_base()
    with torch.device("meta"):
        for name in PACKAGE["rows"]:
            model.add_adapter(name, config=name)
    return {r["name"]: r for r in model.adapter_summary(as_dict=True)}


@pytest.mark.parametrize("name", sorted(PACKAGE["rows"]))
def test_new_configs_count_as_the_package(package_rows, name):
    package, ours = PACKAGE["rows"][name], package_rows[name]
    assert "error" not in package, package.get("error")
    expected = package["#param"]
    if name in DENSE_VECTORS:
        config, hidden, layers = package["config"], 768, 12
        modules = layers * len(config["attn_matrices"])
        expected -= modules * (config["r"] ** 2 - config["r"] + hidden ** 2 - hidden)
    assert ours["#param"] == expected
    assert ours["architecture"] == ARCHITECTURE.get(name, "lora")
    assert package_rows["Full model"]["#param"] == PACKAGE["full_model"]
