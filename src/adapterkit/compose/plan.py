"""What a site runs for a setup: a tuple of modules (a Stack of names, the original fast path), a compiled tree,
or () when nothing of the setup lives there."""

from __future__ import annotations

from ..composition import Stack
from . import bottleneck, invertible
from .tree import compile_tree


def compile_site(state, site, setup):
    if isinstance(setup, Stack) and all(isinstance(c, str) for c in setup.children):
        return site.collect(setup.flatten())
    from ..sites import InvertibleSite, ResidualSite, SublayerHookSite

    def leaf(name):
        found = site.collect([name])
        return found[0] if found else None

    if isinstance(site, (ResidualSite, SublayerHookSite)):  # the bottleneck sites (and fusion's)
        node = bottleneck.compile_site(state, site, setup, leaf)
    elif isinstance(site, InvertibleSite):
        node = invertible.compile_site(setup, leaf)
    else:  # projections (LoRA / (IA)^3) and attention (prefix tuning)
        node = compile_tree(setup, leaf)
    return () if node is None else node
