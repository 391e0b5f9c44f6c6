"""Helpers for the checkpoint tests: adapters with randomised weights, outputs, and a model-unchanged check."""

from __future__ import annotations

import torch

import adapterkit
from conftest import tiny_model

# every method adapterkit has, by config string
METHODS = {
    "seq_bn": "seq_bn", "double_seq_bn": "double_seq_bn", "par_bn": "par_bn", "scaled_par_bn": "scaled_par_bn",
    "seq_bn_inv": "seq_bn_inv", "double_seq_bn_inv": "double_seq_bn_inv", "seq_bn_inv_rf4": "seq_bn_inv[reduction_factor=4]",
    "lora": "lora",
    "lora_all": "lora[r=4,alpha=16,attn_matrices=['q','k','v','o'],intermediate_lora=True,output_lora=True,leave_out=[1]]",
    "ia3": "ia3", "ia3_alpha": "ia3[alpha=2.0,attn_matrices=['q','v'],output_lora=True]",
    "dora": "dora[r=4,alpha=12,attn_matrices=['q','k','v'],intermediate_lora=True]",
}
LORA_FAMILY = ["lora", "lora_all", "ia3", "ia3_alpha"]


def randomise(module: torch.nn.Module, seed: int = 0) -> None:
    """Weights ~ N(0, 0.3); (IA)^3 vectors and learned scalings ~ 1 + N(0, 0.3): identity inits hide nothing."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
            if name.endswith(("ia3_l", "scaling")):
                p.add_(1.0)


def model_with(arch: str, method: str, name: str = "a", cls=None, seed: int = 0, **overrides):
    model = adapterkit.init(tiny_model(arch, cls=cls, **overrides))
    model.add_adapter(name, config=METHODS.get(method, method), set_active=True)
    randomise(model.adapterkit[name], seed)
    return model


def outputs(model, batch) -> torch.Tensor:
    with torch.no_grad():
        out = model(**batch)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def snapshot(model) -> dict:
    return {"state": {k: v.clone() for k, v in model.state_dict().items()},
            "configs": {k: v.to_dict() for k, v in model.adapters_config.items()},
            "active": model.active_adapters, "sites": set(model.adapter_state.sites)}


def assert_unchanged(model, before: dict) -> None:
    after = snapshot(model)
    assert after["configs"] == before["configs"]
    assert after["active"] == before["active"]
    assert after["sites"] == before["sites"]
    assert after["state"].keys() == before["state"].keys()
    for k, v in before["state"].items():
        assert torch.equal(after["state"][k], v), k
