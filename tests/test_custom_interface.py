"""An architecture adapterkit does not ship, described at runtime: a small pre-LN transformer (plain nn.Modules,
its own config class and model_type) gets LoRA, (IA)^3 and Pfeiffer adapters through `init(model, interface=...)`."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import PretrainedConfig

import adapterkit
from adapterkit import ModelInterface, SublayerSite


class ToyConfig(PretrainedConfig):
    model_type = "adapterkit-toy"

    def __init__(self, hidden_size=32, num_layers=2, num_heads=4, ffn_size=64, vocab_size=50, **kwargs):
        super().__init__(**kwargs)
        self.hidden_size, self.num_layers, self.num_heads = hidden_size, num_layers, num_heads
        self.ffn_size, self.vocab_size = ffn_size, vocab_size


class ToyAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        d = config.hidden_size
        self.heads = config.num_heads
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = (p(x).view(b, n, self.heads, -1).transpose(1, 2) for p in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o(out.transpose(1, 2).reshape(b, n, d))


class ToyFFN(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.up = nn.Linear(config.hidden_size, config.ffn_size)
        self.down = nn.Linear(config.ffn_size, config.hidden_size)

    def forward(self, x):
        return self.down(F.gelu(self.up(x)))


class ToyBlock(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(config.hidden_size), nn.LayerNorm(config.hidden_size)
        self.attn, self.ffn = ToyAttention(config), ToyFFN(config)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.ffn(self.ln2(x))


class ToyLM(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        self.blocks = nn.ModuleList(ToyBlock(config) for _ in range(config.num_layers))
        self.norm = nn.LayerNorm(config.hidden_size)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size)

    def forward(self, input_ids):
        x = self.embed(input_ids)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.norm(x))


TOY = ModelInterface(
    model_types=("adapterkit-toy",),
    embeddings="embed",
    layers="blocks",
    attention={"q": "attn.q", "k": "attn.k", "v": "attn.v", "o": "attn.o"},
    intermediate=("ffn.up",),
    output=("ffn.down",),
    residual_sites={"mh_adapter": SublayerSite(output="attn", residual="ln1"),
                    "output_adapter": SublayerSite(output="ffn", residual="ln2")},
    self_attention="attn",
    lm_heads=("lm_head",),
)


def toy(seed=0):
    torch.manual_seed(seed)
    return ToyLM(ToyConfig()).eval()


IDS = torch.randint(0, 50, (2, 9), generator=torch.Generator().manual_seed(4))


def randomize(module, scale=0.2):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


def test_unknown_architecture_gets_an_inferred_interface():
    """No interface registered: init infers this one (interfaces/infer) and finds TOY's sites; its attention
    does not call transformers' registry: prefix tuning reaches it as checked own attention (prefix rows)."""
    inferred = adapterkit.init(toy()).adapter_state.interface
    assert (inferred.attention, inferred.intermediate, inferred.output, inferred.residual_sites) == (
        TOY.attention, TOY.intermediate, TOY.output, TOY.residual_sites)
    assert not inferred.attention_registry and inferred.own_attention.kind == "rows"
    model = adapterkit.init(toy())
    with torch.no_grad():
        base = model(IDS)
        model.add_adapter("p", config="prefix_tuning", set_active=True)
        assert not torch.allclose(model(IDS), base, atol=1e-4)


@pytest.mark.parametrize("config", ["lora[attn_matrices=['q','k','v','o'],intermediate_lora=True,output_lora=True]",
                                    "ia3"])
def test_lora_and_ia3_on_a_runtime_described_model(config):
    model = adapterkit.init(toy(), interface=TOY)
    with torch.no_grad():
        base = model(IDS)
    model.add_adapter("a", config=config)
    model.train_adapter("a")
    assert torch.equal(model(IDS).detach(), base)  # identity at init
    randomize(model.adapterkit["a"])
    out = model(IDS)
    out.pow(2).mean().backward()
    assert all(p.grad is not None for p in model.adapterkit["a"].parameters())
    assert all(p.grad is None for n, p in model.named_parameters() if not n.startswith("adapterkit."))
    model.eval()
    model.merge_adapter("a")
    with torch.no_grad():
        torch.testing.assert_close(model(IDS), out.detach(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("config", ["pfeiffer", "pfeiffer+inv"])
def test_pfeiffer_on_a_runtime_described_model_matches_a_hand_written_forward(config):
    model = adapterkit.init(toy(), interface=TOY)
    before = sum(p.numel() for p in model.parameters())
    model.add_adapter("p", config=config, set_active=True)
    assert model.adapter_summary(as_dict=True)[0]["#param"] == sum(p.numel() for p in model.parameters()) - before
    randomize(model.adapterkit["p"])
    adapters = model.adapterkit["p"]
    inv = adapters.shared["invertible"] if "invertible" in adapters.shared else None
    with torch.no_grad(), adapterkit.AdapterSetup(None):  # the plain model's modules, adapters by hand
        x = model.embed(IDS)
        x = inv(x) if inv is not None else x
        for i, block in enumerate(model.blocks):
            x = x + block.attn(block.ln1(x))
            h = block.ffn(block.ln2(x))
            # Pfeiffer on a pre-LN layer (no norm at the site): x + h + f(x + h)
            x = x + h + adapters.layers[str(i)]["output_adapter"].delta(h + x)
        x = model.norm(x)
        expected = model.lm_head(inv(x, rev=True) if inv is not None else x)
        plain = model(IDS)
    with torch.no_grad():
        torch.testing.assert_close(model(IDS), expected, atol=1e-5, rtol=0)
    assert (plain - expected).abs().max() > 1e-3
