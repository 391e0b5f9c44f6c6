"""(IA)^3 `scale_inputs`: `W (l * x) + b` on the named projections (the paper's FFN scaling, peft's
feedforward_modules) instead of `l * (W x + b)`. Checked against forward pre-hooks on a plain model, alone (the
site feeds the scaled input to the projection), inside compositions (the module adds the change), merged, on
nn.Linear and GPT-2's Conv1D; peft conversion: test_checkpoint_peft*.py."""

from __future__ import annotations

import pytest
import torch

import adapterkit
from adapterkit import AdapterConfigError, AdapterError, BatchSplit, Stack

import archs

CONFIG = "ia3[selfattn_lora=False,intermediate_lora=False,output_lora=True,scale_inputs=['output']]"
OUTPUT = {"bert": "output.dense", "llama": "mlp.down_proj", "gpt2": "mlp.c_proj"}


def reference(arch: str, vectors: dict) -> torch.Tensor:
    """The plain model with each layer's output projection fed `l * x` by a pre-hook."""
    plain = archs.model(arch)
    for i, layer in enumerate(archs_layers(plain, arch)):
        layer.get_submodule(OUTPUT[arch]).register_forward_pre_hook(lambda m, a, v=vectors[i]: (a[0] * v,))
    with torch.no_grad():
        return plain(**archs.inputs(arch)).last_hidden_state


def archs_layers(model, arch):
    return {"bert": lambda: model.encoder.layer, "llama": lambda: model.layers, "gpt2": lambda: model.h}[arch]()


def vectors(model, name="a") -> dict:
    return {i: model.adapterkit[name].layers[str(i)]["output"].ia3_l.detach() for i in range(archs.L)}


def out(model, arch):
    with torch.no_grad():
        return model(**archs.inputs(arch)).last_hidden_state


@pytest.mark.parametrize("arch", sorted(OUTPUT))
def test_scales_the_projection_input_alone_in_a_stack_and_merged(arch):
    model = archs.randomised(arch, {"a": CONFIG, "b": "ia3[selfattn_lora=False,intermediate_lora=False,"
                                                        "output_lora=True]"}, scale=0.3)
    expected = reference(arch, vectors(model))
    model.set_active_adapters("a")
    torch.testing.assert_close(out(model, arch), expected, atol=1e-5, rtol=0)  # the site's scaled-input path
    # in a Stack with an output-scaling (IA)^3 on the same projection: the module's own forward adds the change
    model.set_active_adapters(Stack("a", "b"))
    b = {i: model.adapterkit["b"].layers[str(i)]["output"].ia3_l.detach() for i in range(archs.L)}
    plain = archs.model(arch)
    for i, layer in enumerate(archs_layers(plain, arch)):
        proj = layer.get_submodule(OUTPUT[arch])
        proj.register_forward_pre_hook(lambda m, a, v=vectors(model)[i]: (a[0] * v,))
        proj.register_forward_hook(lambda m, a, o, v=b[i]: o * v)
    with torch.no_grad():
        stacked = plain(**archs.inputs(arch)).last_hidden_state
    torch.testing.assert_close(out(model, arch), stacked, atol=1e-5, rtol=0)
    model.set_active_adapters("a")
    model.merge_adapter("a")
    torch.testing.assert_close(out(model, arch), expected, atol=1e-5, rtol=0)
    model.reset_adapter("a")
    plain_out = out(archs.model(arch), arch)
    with adapterkit.AdapterSetup(None):
        torch.testing.assert_close(out(model, arch), plain_out, atol=1e-6, rtol=0)  # reset restores W


def test_rows_of_a_batch_split_get_their_own_adapter():
    model = archs.randomised("bert", {"a": CONFIG, "c": CONFIG}, scale=0.3)
    model.set_active_adapters(BatchSplit("a", "c", batch_sizes=[1, 2]))
    both = out(model, "bert")
    torch.testing.assert_close(both[:1], reference("bert", vectors(model, "a"))[:1], atol=1e-5, rtol=0)
    torch.testing.assert_close(both[1:], reference("bert", vectors(model, "c"))[1:], atol=1e-5, rtol=0)


def test_trains_its_vector():
    model = archs.randomised("bert", {"a": CONFIG}, scale=0.3)
    model.train_adapter("a")
    model(**archs.inputs("bert")).last_hidden_state.pow(2).mean().backward()
    grads = [p.grad for p in model.adapterkit["a"].parameters()]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for n, p in model.named_parameters() if not n.startswith("adapterkit."))


def test_bad_configs_and_formats_are_refused(tmp_path):
    with pytest.raises(AdapterConfigError, match="scale_inputs is for \\(IA\\)\\^3"):
        adapterkit.LoRAConfig(output_lora=True, scale_inputs=["output"])
    with pytest.raises(AdapterConfigError, match="scale_inputs names \\['output'\\], which this config does not "
                                                 "target"):
        adapterkit.IA3Config(scale_inputs=["output"])
    with pytest.raises(AdapterConfigError, match="must be a list drawn from"):
        adapterkit.IA3Config(scale_inputs=["down"])
    with pytest.raises(AdapterConfigError, match="scale_inputs has no gated form"):
        adapterkit.IA3Config(output_lora=True, scale_inputs=["output"], use_gating=True)
    gpt2 = adapterkit.init(archs.model("gpt2"))
    with pytest.raises(AdapterError, match="part of a fused projection that shares its input"):
        gpt2.add_adapter("a", config="ia3[scale_inputs=['k']]")
    model = archs.randomised("bert", {"a": CONFIG})
    with pytest.raises(AdapterConfigError, match="no AdapterHub form"):
        model.save_adapter(tmp_path / "hub", "a", format="adapterhub")
    model.save_adapter(tmp_path / "ours", "a")
    again = adapterkit.init(archs.model("bert"))
    again.load_adapter(tmp_path / "ours", set_active=True)
    model.set_active_adapters("a")
    assert again.adapters_config["a"].scale_inputs == ["output"]
    torch.testing.assert_close(out(again, "bert"), out(model, "bert"), atol=0, rtol=0)
