"""AdapterDrop training (Rücklé et al., 2021): a Trainer callback that leaves out the adapters of the lowest layers,
a new random number of them each optimizer step, so the trained adapter still works with any of them dropped.

The schedule is the `adapters` package's (its AdapterDrop notebook's `AdapterDropTrainerCallback`; the package
itself ships none): at each step `n = randint(0, max_skip)` (numpy, upper bound exclusive; the notebook's 11 for a
12-layer model is `max_skip = n_layers - 1`, the default) and `skip_layers = [0, ..., n - 1]`. One difference: the
notebook clears the skipping only in `on_evaluate`, which runs after an evaluation, so that evaluation still drops
the last step's layers; here the skipping ends with each step (`on_step_end`, before any evaluation) and with
training.
"""

from __future__ import annotations

import numpy as np
from transformers import TrainerCallback

from .errors import AdapterError
from .model import AdapterModelMixin


def _adapter_model(model):
    while not isinstance(model, AdapterModelMixin) and hasattr(model, "module"):  # DDP / accelerate wrappers
        model = model.module
    if not isinstance(model, AdapterModelMixin):
        raise AdapterError(f"AdapterDropCallback needs an adapterkit model, got {type(model).__name__}")
    return model


class AdapterDropCallback(TrainerCallback):
    """`Trainer(..., callbacks=[AdapterDropCallback()])`. `max_skip`: the exclusive upper bound of the number of
    lowest layers skipped per step (default: the model's layer count - 1); `seed`: a numpy RandomState for the
    draws (default: numpy's global RNG, as the notebook)."""

    def __init__(self, max_skip: int | None = None, seed: int | None = None):
        if max_skip is not None and (isinstance(max_skip, bool) or not isinstance(max_skip, int) or max_skip < 1):
            raise AdapterError(f"AdapterDropCallback max_skip={max_skip!r} must be an int >= 1 (the exclusive upper "
                               "bound of the number of layers skipped) or None")
        self.max_skip = max_skip
        self.rng = np.random.RandomState(seed) if seed is not None else np.random
        self.skipped: list[int] = []  # this step's skip_layers

    def draw(self, n_layers: int) -> list[int]:
        bound = self.max_skip if self.max_skip is not None else n_layers - 1
        if bound > n_layers:
            raise AdapterError(f"AdapterDropCallback max_skip={bound} exceeds the model's {n_layers} layers")
        return list(range(self.rng.randint(0, max(bound, 1))))

    def _set(self, model, skip) -> None:
        # the active setup stays as it is (and so do its compiled plans: skipping is read per forward)
        state = _adapter_model(model).adapter_state
        state.skip_layers = state.check_skip_layers(skip)

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        self.skipped = self.draw(len(_adapter_model(model).adapter_state.layers))
        self._set(model, self.skipped)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self._set(model, None)

    on_train_end = on_step_end


__all__ = ["AdapterDropCallback"]
