"""Converting the head of a transformers task model (`BertForSequenceClassification`, ...) to a flexible head.

The architecture interface says, per task-model class, which flexible head it is and where its weights go
(`TaskHead`); this module applies that to a config and a set of weights, from a live model or a checkpoint.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from ..errors import AdapterError
from ..interfaces.base import ModelInterface, TaskHead


def task_head_for(interface: ModelInterface, model_class: str | None) -> TaskHead | None:
    return interface.task_heads.get(model_class) if model_class else None


def task_head_config(task: TaskHead, model_config, *, label2id: Mapping | None = None,
                     num_labels: int | None = None) -> dict[str, Any]:
    """The flexible-head config of a task head; `"config.<attr>"` values are read from the model config."""
    config: dict[str, Any] = {"head_type": task.head_type}
    for key, value in task.config.items():
        if isinstance(value, str) and value.startswith("config."):
            value = getattr(model_config, value[len("config."):])
        config[key] = value
    if task.head_type in ("classification", "tagging", "multilabel_classification", "image_classification"):
        config["num_labels"] = num_labels if num_labels is not None else model_config.num_labels
        label2id = label2id if label2id is not None else getattr(model_config, "label2id", None)
        config["label2id"] = _label2id(label2id) if label2id else None
    return config


def rename_task_weights(task: TaskHead, weights: Mapping[str, torch.Tensor], *, source: str
                        ) -> dict[str, torch.Tensor]:
    """Task-model head weights (`classifier.weight`) -> flexible-head keys (`1.weight`).

    A key the interface does not map raises (naming it and `source`); two keys mapping to one place (a tied
    bias saved twice) must hold the same values.
    """
    paths = sorted(task.weights, key=len, reverse=True)
    out: dict[str, torch.Tensor] = {}
    for key, tensor in weights.items():
        path = next((p for p in paths if key == p or key.startswith(p + ".")), None)
        if path is None:
            raise AdapterError(
                f"{source}: task-head weight {key!r} has no place in the flexible head; "
                f"known: {', '.join(sorted(task.weights))}"
            )
        target = task.weights[path] + key[len(path):]
        if target in out and not torch.equal(out[target], tensor):
            raise AdapterError(f"{source}: {key!r} and another weight both map to {target!r} but differ")
        out[target] = tensor
    return out


def _label2id(label2id):
    """Names as strings and indices as ints where they convert; anything else is left for the head's check."""
    if not isinstance(label2id, Mapping):
        return label2id
    out = {}
    for k, v in label2id.items():
        try:
            out[str(k)] = int(v) if isinstance(v, (int, str)) and not isinstance(v, bool) else v
        except ValueError:
            out[str(k)] = v
    return out
