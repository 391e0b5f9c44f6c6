"""Which composition blocks each method family runs, checked when a setup is set (`state.check_setup`)."""

from __future__ import annotations

from ..composition import (AdapterCompositionBlock, Average, BatchSplit, Fuse, Parallel, Split, Stack,
                           check_nesting)
from ..errors import AdapterError

# method family (a config's `architecture`) -> blocks it supports
SUPPORTED: dict[str, tuple[type, ...]] = {
    "bottleneck": (Stack, Fuse, Split, BatchSplit, Parallel, Average),
    "lora": (Stack, BatchSplit, Parallel, Average),
    "prefix_tuning": (Stack, BatchSplit, Parallel),
}
_LABEL = {"bottleneck": "bottleneck", "lora": "LoRA / (IA)^3", "prefix_tuning": "prefix-tuning"}


def families(config) -> list[str]:
    """The method families of an adapter config (a ConfigUnion has several)."""
    if config.architecture == "union":
        return [f for member in config for f in families(member)]
    return [config.architecture]


def check_supported(state, setup: AdapterCompositionBlock) -> None:
    """Nesting rules, then every block against every method of every adapter beneath it; Fuse needs its fusion."""
    check_nesting(setup)
    _check_block(state, setup)


def _check_block(state, block: AdapterCompositionBlock) -> None:
    for name in block.flatten():
        for family in families(state.configs[name]):
            allowed = SUPPORTED.get(family)
            if allowed is not None and type(block) not in allowed:
                raise AdapterError(
                    f"{type(block).__name__} is not supported for {_LABEL[family]} adapter {name!r} (in {block!r}); "
                    f"{_LABEL[family]} adapters support: {', '.join(t.__name__ for t in allowed)}"
                )
    if isinstance(block, Fuse):
        from ..fusion.model import get_fusion
        if get_fusion(state.model, block.name) is None:
            raise AdapterError(
                f"no AdapterFusion named {block.name!r} on this model; add it first with "
                f"model.add_adapter_fusion({block!r})"
            )
    for child in block.children:
        if isinstance(child, AdapterCompositionBlock):
            _check_block(state, child)
