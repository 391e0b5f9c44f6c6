"""AdapterTrainer: checkpoints hold only adapters + heads, best-model reload and resume work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import BertConfig, BertForSequenceClassification, TrainerCallback, TrainingArguments

import adapterkit
from adapterkit import AdapterError, AdapterTrainer, AutoAdapterModel
from adapterkit.training import CHECKPOINT_WEIGHTS_NAME, trainable_state_dict

# Bigger than the other tests' tiny model, so that "far below the base model's size" means something.
CONFIG = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, vocab_size=6000,
              max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def make_model(head_seed: int = 0):
    torch.manual_seed(0)
    model = AutoAdapterModel.from_config(BertConfig(**CONFIG))
    torch.manual_seed(head_seed)
    model.add_adapter("task", config="lora[r=4,alpha=8]")
    model.add_classification_head("task", num_labels=2)
    with torch.no_grad():  # LoRA's B starts at zero; move it so adapter training shows from step one
        for name, p in model.adapterkit.named_parameters():
            p.normal_(0, 0.05)
    model.train_adapter("task")
    return model


def dataset(n: int = 32):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 2000, (n, 8), generator=g)
    return [{"input_ids": row, "attention_mask": torch.ones(8, dtype=torch.long), "labels": int(row[0] % 2)}
            for row in ids]


def args(out: Path, **kw):
    defaults = dict(max_steps=4, per_device_train_batch_size=4, learning_rate=1e-2, save_steps=2, report_to="none",
                    use_cpu=True, logging_steps=1, disable_tqdm=True, seed=0)
    return TrainingArguments(str(out), **{**defaults, **kw})


def ckpt_weights(path: Path) -> dict:
    return load_file(path / CHECKPOINT_WEIGHTS_NAME)


def test_checkpoints_hold_only_adapters_and_heads(tmp_path):
    model = make_model()
    base_keys = {f"bert.{k}" for k in model.bert.state_dict()}
    base_bytes = sum(t.numel() * t.element_size() for t in model.bert.state_dict().values())
    trainer = AdapterTrainer(model=model, args=args(tmp_path), train_dataset=dataset())
    trainer.train()
    checkpoints = sorted(tmp_path.glob("checkpoint-*"))
    assert [c.name for c in checkpoints] == ["checkpoint-2", "checkpoint-4"]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    for ckpt in checkpoints:
        files = {p.name: p.stat().st_size for p in ckpt.iterdir()}
        total = sum(files.values())
        assert total < 0.1 * base_bytes, (files, base_bytes)  # ~0.11 MB of a 1.8 MB base
        for name in files:
            if name.endswith(".safetensors"):
                with safe_open(ckpt / name, "pt") as f:
                    keys = set(f.keys())
                assert not keys & base_keys and keys == trainable
        optimizer = torch.load(ckpt / "optimizer.pt", weights_only=True)
        moments = sum(s["exp_avg"].numel() for s in optimizer["state"].values())
        assert moments == sum(p.numel() for n, p in model.named_parameters() if p.requires_grad)
    final = ckpt_weights(checkpoints[-1])
    for key, value in trainable_state_dict(model).items():
        assert torch.equal(final[key], value)
    assert not torch.equal(final["heads.task.4.weight"], ckpt_weights(checkpoints[0])["heads.task.4.weight"])
    trainer.save_model(tmp_path / "final")
    assert sorted(p.name for p in (tmp_path / "final").iterdir()) == [
        "adapterkit_checkpoint.json", "adapterkit_checkpoint.safetensors", "training_args.bin"]


def test_load_best_model_at_end(tmp_path):
    scores = iter([3.0, 1.0, 2.0])  # the first evaluation (step 2) is the best
    model = make_model()
    trainer = AdapterTrainer(
        model=model, args=args(tmp_path, max_steps=6, eval_strategy="steps", eval_steps=2, load_best_model_at_end=True,
                               metric_for_best_model="score", greater_is_better=True),
        train_dataset=dataset(), eval_dataset=dataset(8), compute_metrics=lambda _: {"score": next(scores)})
    trainer.train()
    assert Path(trainer.state.best_model_checkpoint).name == "checkpoint-2"
    best, last = ckpt_weights(tmp_path / "checkpoint-2"), ckpt_weights(tmp_path / "checkpoint-6")
    now = trainable_state_dict(model)
    assert all(torch.equal(now[k], best[k]) for k in best)
    assert not all(torch.equal(now[k], last[k]) for k in last)


def test_resume_from_checkpoint_continues(tmp_path):
    straight = make_model()
    AdapterTrainer(model=straight, args=args(tmp_path / "a", max_steps=6, save_steps=3),
                   train_dataset=dataset()).train()
    # Adapter and head of the second model start elsewhere: only the checkpoint can bring them back on track.
    resumed = make_model(head_seed=123)
    ran = []

    class Steps(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            ran.append(state.global_step)

    trainer = AdapterTrainer(model=resumed, args=args(tmp_path / "b", max_steps=6, save_steps=3),
                             train_dataset=dataset(), callbacks=[Steps()])
    trainer.train(resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-3"))
    assert ran == [4, 5, 6]
    expected, got = trainable_state_dict(straight), trainable_state_dict(resumed)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], atol=1e-6, rtol=0)


def test_resume_into_a_differently_set_up_model_fails_clearly(tmp_path):
    model = make_model()
    AdapterTrainer(model=model, args=args(tmp_path, max_steps=2), train_dataset=dataset()).train()
    other = make_model()
    other.add_adapter("extra", config="lora")
    before = {k: v.clone() for k, v in trainable_state_dict(other).items()}
    trainer = AdapterTrainer(model=other, args=args(tmp_path / "b", max_steps=4), train_dataset=dataset())
    with pytest.raises(AdapterError, match=r"adapterkit_checkpoint\.safetensors: checkpoint does not match.*extra"):
        trainer.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))
    assert all(torch.equal(v, before[k]) for k, v in trainable_state_dict(other).items())


def test_task_model_checkpoints_keep_its_head_but_no_base_weights(tmp_path):
    torch.manual_seed(0)
    model = adapterkit.init(BertForSequenceClassification(BertConfig(**CONFIG, num_labels=2)))
    model.add_adapter("task", config="ia3")
    model.train_adapter("task")
    AdapterTrainer(model=model, args=args(tmp_path, max_steps=2), train_dataset=dataset()).train()
    keys = set(ckpt_weights(tmp_path / "checkpoint-2"))
    assert {"classifier.weight", "classifier.bias"} <= keys
    assert all(k.startswith(("adapterkit.task.", "classifier.")) for k in keys)
    meta = json.loads((tmp_path / "checkpoint-2" / "adapterkit_checkpoint.json").read_text())
    assert meta["adapters"]["task"]["architecture"] == "lora" and meta["heads"] == {}


def test_trainable_state_of_a_bare_base_model_is_the_adapters_only():
    from transformers import BertModel
    model = adapterkit.init(BertModel(BertConfig(**CONFIG)))
    model.add_adapter("a", config="seq_bn")
    assert set(trainable_state_dict(model)) == {f"adapterkit.{k}" for k in model.adapterkit.state_dict()}


def test_trainer_needs_an_adapterkit_model_and_reads_label_names_from_the_head(tmp_path):
    with pytest.raises(AdapterError, match=r"call adapterkit\.init\(model\)"):
        AdapterTrainer(model=BertForSequenceClassification(BertConfig(**CONFIG)), args=args(tmp_path))
    model = make_model()
    model.add_qa_head("task", overwrite_ok=True)
    trainer = AdapterTrainer(model=model, args=args(tmp_path))
    assert trainer.label_names == ["start_positions", "end_positions"]


def test_torch_compile_trains_and_checkpoints_the_same_names(tmp_path):
    """TrainingArguments(torch_compile=True): the Trainer wraps the model in torch.compile; checkpoints still name
    the adapter's weights as the plain model does (no `_orig_mod.` prefix) and the weights train."""
    model = make_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    trainer = AdapterTrainer(model=model, args=args(tmp_path, torch_compile=True, torch_compile_backend="aot_eager"),
                             train_dataset=dataset())
    trainer.train()
    assert type(trainer.model_wrapped).__name__ == "OptimizedModule"
    assert all(not torch.equal(p, before[n]) for n, p in model.named_parameters() if p.requires_grad)
    saved = ckpt_weights(tmp_path / "checkpoint-4")
    assert set(saved) == set(trainable_state_dict(make_model()))
