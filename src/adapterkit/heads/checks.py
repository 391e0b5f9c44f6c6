"""The check of every head config key: type, range, finiteness. A head config comes from files (head_config.json)
as often as from code, so a bad value must be an AdapterConfigError naming the key, not a crash inside torch."""

from __future__ import annotations

from typing import Any, Callable, Mapping

from transformers.activations import ACT2FN

from ..configs.base import number_problem
from ..errors import AdapterConfigError

MAX_LAYERS = 64  # heads have 1 or 2 layers; a bound keeps a config from building 10**5 of them

ACTIVATIONS = tuple(sorted(set(ACT2FN) | {"leakyrelu", "linear"}))


def _int(minimum: int, optional: bool = False, maximum: int | None = None) -> Callable[[Any], str | None]:
    def check(value):
        if optional and value is None:
            return None
        problem = number_problem(value, minimum=minimum, maximum=maximum, integer=True)
        return problem and ("None or " if optional else "") + problem
    return check


def _bool(value) -> str | None:
    return None if isinstance(value, bool) else "True or False"


def _dropout(value) -> str | None:
    if value is None:
        return None
    problem = number_problem(value, minimum=0.0, maximum=1.0, exclusive_max=True)
    return problem and "None or " + problem


def _activation(value) -> str | None:
    if value is None or (isinstance(value, str) and value in ACTIVATIONS):
        return None
    return f"None or one of {', '.join(ACTIVATIONS)}"


def _label2id(value) -> str | None:
    if value is None or (isinstance(value, Mapping) and all(
            isinstance(k, str) and not number_problem(v, minimum=0, integer=True) for k, v in value.items())):
        return None
    return "None or a mapping of label names to class indices (ints >= 0)"


KEY_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "layers": _int(1, maximum=MAX_LAYERS), "num_labels": _int(1), "num_choices": _int(1),
    "vocab_size": _int(1, optional=True),
    "embedding_size": _int(1, optional=True), "dropout_prob": _dropout, "activation_function": _activation,
    "label2id": _label2id, "use_pooler": _bool, "bias": _bool, "multilabel": _bool, "layer_norm": _bool,
    "shift_labels": _bool,
}


def check_head_config(head_type: str, config: Mapping[str, Any]) -> None:
    """Raise AdapterConfigError for the first key whose value is wrong (or that has no check at all)."""
    for key, value in config.items():
        if key == "head_type":
            continue
        check = KEY_CHECKS.get(key)
        if check is None:
            raise AdapterConfigError(f"{head_type} head: key {key!r} has no check; add one to heads/checks.py")
        problem = check(value)
        if problem:
            raise AdapterConfigError(f"{head_type} head: {key}={value!r} must be {problem}")
