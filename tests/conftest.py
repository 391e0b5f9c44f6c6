"""Shared helpers: tiny models built from configs (no downloads)."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertModel, RobertaConfig, RobertaModel

from ci_markers import pytest_runtest_makereport  # noqa: F401  (a hook: a skipped `ci` test fails in CI)

# Tiny models: one intra-op thread is faster and far steadier than several on a shared 2-core machine.
torch.set_num_threads(1)

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=99,
            max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def tiny_config(arch: str = "bert", **overrides):
    if arch == "bert":
        return BertConfig(**{**TINY, **overrides})
    return RobertaConfig(**{**TINY, "pad_token_id": 1, **overrides})


def tiny_model(arch: str = "bert", cls=None, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    cls = cls or (BertModel if arch == "bert" else RobertaModel)
    return cls(tiny_config(arch, **overrides)).eval()


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(2, 99, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, -3:] = 0
    return {"input_ids": ids, "attention_mask": mask}
