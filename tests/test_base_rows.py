"""`adapter_names=[...]` takes "__base__" (peft's spelling) as well as None for rows that run the plain model:
each row of a mixed batch equals that row run alone with its setup (or with no adapter at all)."""

from __future__ import annotations

import pytest
import torch

import adapterkit
from adapterkit import AdapterError, Stack

import archs
from test_composition import BN, LORA, PREFIX, alone, batch, model_with, run


def test_base_rows_mixed_with_every_kind_of_adapter():
    model = model_with(configs={**BN, **LORA, **PREFIX})
    names = ["__base__", "l4", None, "a", "__base__", Stack("p3", "l8"), "i3", "__base__"]
    inputs = batch(rows=len(names))
    out = run(model, inputs, adapter_names=names)
    plain = run(model, inputs, None)
    for row, name in enumerate(names):
        expected = alone(model, inputs, None if name == "__base__" else name, row)
        torch.testing.assert_close(out[row], expected, atol=1e-6, rtol=0)
        if name in ("__base__", None):
            torch.testing.assert_close(out[row], plain[row], atol=1e-6, rtol=0)
        else:  # the adapter changes this row: a base row is not just any row
            assert (out[row] - plain[row]).abs().max() > 1e-3
    # "__base__" and None are the same thing
    same = [None if n == "__base__" else n for n in names]
    torch.testing.assert_close(run(model, inputs, adapter_names=same), out, atol=0, rtol=0)


def test_base_rows_on_the_vectorised_lora_path_of_a_decoder():
    model = archs.randomised("llama", {"x": "lora[r=4]", "y": "lora[r=8,alpha=4]"})
    inputs = archs.inputs("llama", batch=4)
    names = ["x", "__base__", "y", "__base__"]
    with torch.no_grad():
        out = model(**inputs, adapter_names=names).last_hidden_state
        for row, name in enumerate(names):
            one = {k: v[row:row + 1] for k, v in inputs.items()}
            with adapterkit.AdapterSetup(None if name == "__base__" else name):
                torch.testing.assert_close(out[row], model(**one).last_hidden_state[0], atol=1e-5, rtol=0)


def test_all_base_rows_equal_the_plain_model():
    model = model_with(configs=LORA)
    model.set_active_adapters("l4")
    inputs = batch()
    torch.testing.assert_close(run(model, inputs, adapter_names=["__base__"] * 4), run(model, inputs, None),
                               atol=0, rtol=0)


def test_base_is_a_reserved_name():
    model = model_with()
    with pytest.raises(AdapterError, match="'__base__'.*reserved"):
        model.add_adapter("__base__", config="lora")
    with pytest.raises(AdapterError, match="__base__"):  # the list rule names it
        run(model_with(configs={"a": "lora"}), batch(rows=2), adapter_names="a")
