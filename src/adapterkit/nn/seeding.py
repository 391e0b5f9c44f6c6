"""`init_weights_seed`: every module of a seeded adapter starts its initialisation from the same RNG state.

The `adapters` package calls `torch.manual_seed(seed)` inside each module's constructor, so each method has to
remember it. Here the generic build does it for every method: `seeded_build(seed)` wraps one method's build
(registry.build), seeds the RNG at the start, and the state calls `reseed()` after each module it is handed
(state.add_layer_module / add_model_module), so the next module is constructed from the seed again. A module whose
constructor draws numbers it later overwrites (nn.Linear's default init) calls `reseed()` itself right before its
real initialisation, as the package does, so its weights equal the package's for the same seed.

Unlike the package, the caller's RNG is restored afterwards (adding an adapter does not move the user's random
stream), and seed 0 is a seed (the package ignores it).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

_SEED: list = [None]  # the seed of the build running now (builds are not re-entrant across threads)


def _cuda_devices() -> list[int]:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return list(range(torch.cuda.device_count()))
    return []


def reseed() -> None:
    """Inside a seeded build: restart the RNG (CPU, and CUDA once initialised) at the seed; otherwise nothing."""
    seed = _SEED[-1]
    if seed is None:
        return
    torch.default_generator.manual_seed(seed)
    if _cuda_devices():
        torch.cuda.manual_seed_all(seed)


@contextlib.contextmanager
def seeded_build(seed: int | None) -> Iterator[None]:
    """Run a build with every module seeded by `seed` (None: the RNG is left alone, modules draw as usual)."""
    if seed is None:
        _SEED.append(None)
        try:
            yield
        finally:
            _SEED.pop()
        return
    with torch.random.fork_rng(devices=_cuda_devices()):
        _SEED.append(seed)
        try:
            reseed()
            yield
        finally:
            _SEED.pop()
