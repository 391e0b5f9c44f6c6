"""What the reference-fixture generators in tools/ share (make_*_fixtures.py; run with the `adapters` package in
.venv-ref, see tools/make_reference_fixtures.sh): sizes, seeds and the tiny BERT config, the single-adapter cases,
the padded inputs, the parameter randomisation and the manifest's version block. Importing it has no side effects.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Callable

import adapters
import safetensors
import torch
import transformers
from adapters import (DoubleSeqBnConfig, DoubleSeqBnInvConfig, IA3Config, LoRAConfig, ParBnConfig, SeqBnConfig,
                      SeqBnInvConfig)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
# base models and inputs of make_reference_fixtures.py, reused by the method, composition and AdapterHub fixtures
REF_DIR = FIXTURES / "adapters_ref"

BATCH, SEQ = 3, 7
PAD_TAIL = [0, 2, 3]  # trailing padded positions per batch row (text models)
MIN_DIFF = 1e-3  # an adapter must change the output by more than this
INIT_STD = 0.2

# The tiny BERT / RoBERTa config. Still the model's default init, but with std 0.2 instead of 0.02: at 0.02 a 32-wide
# model is almost the identity (attention ~uniform, padding mask changes outputs by ~0.01 and IA3 key scaling by
# ~0.004), which would let attention-path bugs slip through the fixtures.
TINY_BERT = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    vocab_size=99,
    max_position_embeddings=64,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
    initializer_range=0.2,
)

# (case name, config class, kwargs): the single-adapter cases. A case's index in a generator's list seeds its
# parameter randomisation: torch.manual_seed(1234 + index).
ADAPTER_CASES = [
    ("seq_bn", SeqBnConfig, {}),
    ("double_seq_bn", DoubleSeqBnConfig, {}),
    ("par_bn", ParBnConfig, {}),
    ("scaled_par_bn", ParBnConfig, {"scaling": "learned"}),
    ("seq_bn_inv", SeqBnInvConfig, {}),
    ("double_seq_bn_inv", DoubleSeqBnInvConfig, {}),
    ("seq_bn_rf4_swish", SeqBnConfig, {"reduction_factor": 4, "non_linearity": "swish"}),
    ("lora", LoRAConfig, {}),
    ("lora_qkv_ffn", LoRAConfig,
     {"r": 4, "alpha": 16, "attn_matrices": ["q", "k", "v"], "intermediate_lora": True, "output_lora": True}),
    ("ia3", IA3Config, {}),
    ("ia3_attn_only", IA3Config, {"intermediate_lora": False}),
]


def deterministic() -> None:
    """Deterministic kernels, one thread, and no "adapters available but none are activated" warnings."""
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    logging.getLogger("adapters").setLevel(logging.ERROR)


def versions(with_safetensors: bool = True) -> dict[str, str]:
    """The package versions a manifest records."""
    out = {"adapters": adapters.__version__, "transformers": transformers.__version__, "torch": torch.__version__}
    if with_safetensors:
        out["safetensors"] = safetensors.__version__
    out["python"] = sys.version.split()[0]
    return out


def eager_config(config_cls, **kwargs):
    cfg = config_cls(**kwargs)
    cfg._attn_implementation = "eager"
    return cfg


def padded_ids(pad_id: int, vocab_size: int, generator: torch.Generator | None = None):
    """input_ids (BATCH x SEQ, never the pad id in real positions) and attention_mask, with PAD_TAIL padded positions
    per row; drawn from `generator` (default: a new one seeded 42)."""
    g = torch.Generator().manual_seed(42) if generator is None else generator
    # draw from vocab minus the pad id, then shift values >= pad_id up by one
    ids = torch.randint(0, vocab_size - 1, (BATCH, SEQ), generator=g, dtype=torch.int64)
    ids = ids + (ids >= pad_id).to(torch.int64)
    mask = torch.ones(BATCH, SEQ, dtype=torch.int64)
    for row, n in enumerate(PAD_TAIL):
        if n:
            ids[row, SEQ - n:] = pad_id
            mask[row, SEQ - n:] = 0
    assert not bool(((ids == pad_id) & (mask == 1)).any()), "pad id used in a non-padded position"
    return ids, mask


@torch.no_grad()
def forward(model, inputs: dict) -> torch.Tensor:
    return model(**inputs).last_hidden_state.detach().clone().contiguous()


def detached(tensors: dict, keys=None) -> dict[str, torch.Tensor]:
    """Contiguous copies of `tensors` (all, or those named in `keys`, in that order)."""
    return {k: tensors[k].detach().clone().contiguous() for k in (tensors if keys is None else keys)}


def owner_type(model, key: str) -> str:
    return type(model.get_submodule(key.rsplit(".", 1)[0])).__name__


def is_scale_param(key: str, ptype: str) -> bool:
    """(IA)^3 scaling vectors and learned bottleneck `scaling` scalars (initialised around 1); `ptype` is the class
    name of the module that owns the parameter."""
    return (ptype == "IA3" and key.endswith(".lora_B")) or key.endswith(".scaling")


def randomise(params: dict, keys, seed: int, is_scale: Callable[[str], bool]) -> dict[str, str]:
    """torch.manual_seed(seed), then params[k] ~ normal(0, INIT_STD) for k in `keys` in order, plus 1 where
    is_scale(k). Returns {k: the treatment, as the manifests record it}."""
    treatments = {}
    torch.manual_seed(seed)
    with torch.no_grad():
        for k in keys:
            p = params[k].normal_(0.0, INIT_STD)
            if is_scale(k):
                p.add_(1.0)
                treatments[k] = f"1+normal(0,{INIT_STD})"
            else:
                treatments[k] = f"normal(0,{INIT_STD})"
    return treatments


def shape_of(t) -> list[int]:
    return list(t.shape)


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n")


def tree_size(path: Path) -> int:
    """Bytes in all files below `path`."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def finish(out: Path, manifest: dict, max_bytes: float, too_large: str) -> None:
    """Write out/manifest.json, print the size of all files below `out` and check that it is under max_bytes."""
    write_json(out / "manifest.json", manifest)
    total = tree_size(out)
    print(f"total fixture size: {total} bytes ({total / 1024:.1f} KiB)")
    assert total < max_bytes, too_large


def canonical_rank(key: str) -> int:
    """Prefer the pool-level prefix name and the base-model shared_parameters name over per-layer aliases."""
    if key.startswith("prefix_tuning.prefix_tunings.") or key.startswith("shared_parameters."):
        return 0
    return 1


def group_new_tensors(model, before: set[str]):
    """New state_dict entries grouped by underlying tensor.

    The PrefixTuningPool is registered both on the base model (`prefix_tuning`) and as `pool` inside every
    layer's PrefixTuningLayer, so each prefix tensor appears under 1 + n_layers state_dict names.
    Returns [(canonical key, [all keys])] in order of first appearance in model.state_dict().
    """
    sd = model.state_dict(keep_vars=True)
    groups: dict[int, list[str]] = {}
    order: list[int] = []
    for k, v in sd.items():
        if k in before:
            continue
        tid = id(v)
        if tid not in groups:
            groups[tid] = []
            order.append(tid)
        groups[tid].append(k)
    out = []
    for tid in order:
        keys = groups[tid]
        canon = sorted(keys, key=lambda k: (canonical_rank(k), keys.index(k)))[0]
        out.append((canon, keys))
    return out
