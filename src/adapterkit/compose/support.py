"""Which composition blocks each method runs (its `MethodSpec.blocks`), checked when a setup is set."""

from __future__ import annotations

from ..blocks import AdapterCompositionBlock, Fuse, check_nesting
from ..errors import AdapterError
from ..registry import check_blocks


def check_supported(state, setup: AdapterCompositionBlock) -> None:
    """Nesting rules, then every block against every method of every adapter beneath it; Fuse needs its fusion."""
    check_nesting(setup)
    _check_block(state, setup)


def _check_block(state, block: AdapterCompositionBlock) -> None:
    check_blocks(state.configs, block)
    if isinstance(block, Fuse) and state.fusion(block.name) is None:
        raise AdapterError(
            f"no AdapterFusion named {block.name!r} on this model; add it first with "
            f"model.add_adapter_fusion({block!r})"
        )
    for child in block.children:
        if isinstance(child, AdapterCompositionBlock):
            _check_block(state, child)
