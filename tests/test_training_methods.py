"""Every method added after the 3.1 feature set trains with train_adapter and the AdapterTrainer: only the adapter
and the head change, and the checkpoint holds exactly them (the per-method files test their own loops)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from transformers import BertConfig

from adapterkit import AdapterTrainer, AutoAdapterModel
from adapterkit.training import CHECKPOINT_WEIGHTS_NAME

from test_training import CONFIG, args, dataset

METHODS = ["dora", "dora[dora_semantics='peft']", "vera", "dvora", "prompt_tuning[prompt_length=4]",
           "loreft[suffix_positions=1]", "noreft", "direft", "mtl_lora[n_up_projection=2]", "adapterplus",
           "lora[init_weights='pissa',r=4]", "lora[rank_pattern={'query': 2},r=4]", "lora[init_weights_seed=3]"]


@pytest.mark.parametrize("config", METHODS)
def test_adapter_trainer_trains_exactly_the_adapter_and_head(tmp_path, config):
    torch.manual_seed(0)
    model = AutoAdapterModel.from_config(BertConfig(**CONFIG))
    model.add_adapter("task", config=config)
    model.add_classification_head("task", num_labels=2)
    model.train_adapter("task")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("adapterkit.task.", "heads.task.")) for n in trainable)
    AdapterTrainer(model=model, args=args(tmp_path, max_steps=4, save_steps=4), train_dataset=dataset()).train()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed <= trainable
    assert any(n.startswith("adapterkit.task.") for n in changed), changed
    # plus the adapter's saved buffers (VeRA's frozen pair, the base of ReFT's orthogonal map): resuming needs them
    buffers = {n for n, _ in model.named_buffers() if n.startswith("adapterkit.task.")} & set(model.state_dict())
    assert set(load_file(tmp_path / "checkpoint-4" / CHECKPOINT_WEIGHTS_NAME)) == trainable | buffers


def test_a_task_ids_column_reaches_the_forward_through_the_adapter_trainer(tmp_path):
    """Trainer drops data set columns model.forward does not name; adapterkit's per-row arguments are kept, so an
    MTL-LoRA MultiTask trains from a `task_ids` column (without it the active MultiTask refuses the batch)."""
    datasets = pytest.importorskip("datasets")
    from adapterkit import MultiTask
    torch.manual_seed(0)
    model = AutoAdapterModel.from_config(BertConfig(**CONFIG))
    for task in ("a", "b"):
        model.add_adapter(task, config="mtl_lora[n_up_projection=2]")
    model.share_parameters(MultiTask("a", "b"))
    model.add_classification_head("a", num_labels=2)
    model.train_adapter(MultiTask("a", "b"))
    model.active_head = "a"
    rows = dataset()
    data = datasets.Dataset.from_dict({"input_ids": [r["input_ids"].tolist() for r in rows],
                                       "attention_mask": [r["attention_mask"].tolist() for r in rows],
                                       "labels": [r["labels"] for r in rows],
                                       "task_ids": [i % 2 for i in range(len(rows))]})
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    AdapterTrainer(model=model, args=args(tmp_path, max_steps=3, save_steps=3), train_dataset=data).train()
    assert any(not torch.equal(p.detach(), before[n]) for n, p in model.named_parameters() if n.startswith(
        "adapterkit.b."))  # rows of task b trained task b's own parameters
