"""A few SGD steps of LoRA, seq_bn and prefix tuning on a tiny BERT and a tiny Llama, sharded with FSDP2.

Run by tests/test_fsdp.py under `torchrun --nproc_per_node=2` (gloo, CPU): the model is sharded with
`adapterkit.distributed.shard_model` (every transformer layer, then the root), each rank trains on its half of the
same global batches; then each rank writes the gathered adapter + head weights to OUT/rank<r>/<arch>_<method>.
safetensors and rank 0 saves the adapter with its head (adapterkit format) to OUT/saved/<arch>_<method>. Imported by
the test for the one-process run over the same global batches (`run`, world 1, no sharding). Plain SGD, so a
wrongly scaled gradient changes the result.

usage: fsdp_steps.py OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).parents[1]))
import archs  # noqa: E402
from adapterkit import AutoAdapterModel  # noqa: E402
from adapterkit import distributed  # noqa: E402

STEPS, GLOBAL_BATCH, SEQ = 3, 4, 6
ARCHS = ["bert", "llama"]
METHODS = {"lora": "lora[r=4,alpha=8,attn_matrices=['q','k','v'],output_lora=True]",
           "seq_bn": "seq_bn[reduction_factor=4]",
           "prefix": "prefix_tuning[prefix_length=3,bottleneck_size=16]"}


def build(arch: str, method: str):
    """The same model on every rank: seeded base, adapter and head, adapter weights moved off their init."""
    torch.manual_seed(0)
    model = AutoAdapterModel.from_config(archs.config(arch))
    model.add_adapter("task", config=METHODS[method])
    model.add_classification_head("task", num_labels=2)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.adapterkit.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    model.train_adapter("task")
    return model


def data():
    g = torch.Generator().manual_seed(1)
    rows = torch.randint(5, archs.VOCAB, (GLOBAL_BATCH * STEPS, SEQ), generator=g)
    return rows, rows[:, 0] % 2


def probe():
    """Inputs for comparing outputs after loading."""
    return torch.randint(5, archs.VOCAB, (3, SEQ), generator=torch.Generator().manual_seed(2))


def train(model, world: int = 1, rank: int = 0) -> None:
    """STEPS SGD steps; this rank takes its share of each global batch (FSDP averages the gradients)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.5)
    rows, labels = data()
    per = GLOBAL_BATCH // world
    model.train()
    for step in range(STEPS):
        start = step * GLOBAL_BATCH + rank * per
        loss = model(input_ids=rows[start:start + per], labels=labels[start:start + per]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def weights(model) -> dict[str, torch.Tensor]:
    """The adapter + head weights by model key (whole tensors: call inside `gathered_adapters` when sharded)."""
    ids = {id(p) for _, _, p in distributed.adapter_parameters(model)}
    return {k: v.detach().clone().contiguous() for k, v in model.named_parameters() if id(v) in ids}


def run(arch: str, method: str) -> tuple[dict, object]:
    """One process, no sharding: (final weights, the trained model)."""
    model = build(arch, method)
    train(model)
    return weights(model), model


def main() -> None:
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo")
    world, rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
    (out / f"rank{rank}").mkdir(parents=True, exist_ok=True)
    for arch in ARCHS:
        for method in METHODS:
            model = distributed.shard_model(build(arch, method))
            train(model, world, rank)
            with distributed.gathered_adapters(model, rank0_only=False):
                save_file(weights(model), str(out / f"rank{rank}" / f"{arch}_{method}.safetensors"))
            distributed.save_adapter(model, out / "saved" / f"{arch}_{method}", "task")
    # tear the process group down before the interpreter does (gloo threads alive at exit can abort it)
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
