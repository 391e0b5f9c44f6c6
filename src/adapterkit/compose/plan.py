"""What a site runs for a setup: a tuple of modules (a Stack of names, the original fast path), a compiled tree,
or () when nothing of the setup lives there. How a tree compiles is the site kind's (`Site.compile`)."""

from __future__ import annotations

from ..blocks import Stack


def compile_plan(state, site, setup):
    if isinstance(setup, Stack) and all(isinstance(c, str) for c in setup.children):
        return site.collect(setup.flatten())

    def leaf(name):
        found = site.collect([name])
        return found[0] if found else None

    node = site.compile(state, setup, leaf)
    return () if node is None else node
