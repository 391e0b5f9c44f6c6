"""peft's `rank_pattern` / `alpha_pattern`: per-module r and alpha, keyed by module name.

A key matches a module whose full name (as `model.named_modules()` spells it) is the key or ends in "." + the key,
the key read as a regular expression: `re.match(rf"(.*\\.)?({key})$", name)`, peft's `get_pattern_key`. The first
matching key (in the mapping's order) wins. Keeping peft's rule means a PEFT config reads and writes verbatim.

The order is lost on disk: peft and adapterkit both write JSON with sorted keys, so a module matched by two keys
with different values can get the other value on reload (peft cannot load such a file of its own: shape errors).
`order_free` therefore rewrites, at build, a pattern whose result depends on its order into one exact entry
(`^<escaped name>`) per module that differs from the default: the same values on this model, in any order.
"""

from __future__ import annotations

import re
import warnings
from typing import Iterable, Mapping

from ..errors import AdapterConfigError
from .base import number_problem


def _matches(key: str, name: str) -> bool:
    return re.match(rf"(.*\.)?({key})$", name) is not None


def value_for(pattern: Mapping[str, float], name: str, default):
    """The value of the first key of `pattern` matching module `name`, else `default`."""
    for key, value in pattern.items():
        if _matches(key, name):
            return value
    return default


def check_pattern(owner: str, field_name: str, pattern, *, integer: bool) -> dict:
    """A mapping of valid regular expressions to r values (integers >= 1) or alphas (numbers > 0)."""
    if pattern is None:
        return {}
    if not isinstance(pattern, Mapping):
        raise AdapterConfigError(f"{owner}.{field_name}={pattern!r} must be a mapping of module-name patterns to "
                                 f"{'ranks' if integer else 'alphas'}")
    for key, value in pattern.items():
        if not isinstance(key, str) or not key:
            raise AdapterConfigError(f"{owner}.{field_name} key {key!r} must be a non-empty string (a module name "
                                     "or regular expression)")
        try:
            re.compile(key)
        except re.error as e:
            raise AdapterConfigError(f"{owner}.{field_name} key {key!r} is not a valid regular expression ({e})") \
                from None
        problem = number_problem(value, minimum=1 if integer else 0, integer=integer, exclusive_min=not integer)
        if problem:
            raise AdapterConfigError(f"{owner}.{field_name}[{key!r}]={value!r} must be {problem}")
    return dict(pattern)


def order_free(pattern: Mapping[str, float], names: Iterable[str], default) -> dict | None:
    """None if every module in `names` gets the same value whichever matching key wins; else the exact per-module
    pattern giving each module the value peft's first-match rule gives it."""
    names = list(names)
    if all(len({v for k, v in pattern.items() if _matches(k, n)}) <= 1 for n in names):
        return None
    exact = {"^" + re.escape(n): value_for(pattern, n, default) for n in names}
    return {k: v for k, v in exact.items() if v != default}


def warn_unmatched(owner: str, patterns: Mapping[str, Mapping], names: Iterable[str]) -> None:
    """peft warns (RuntimeWarning) about pattern keys that match none of the adapted modules, and ignores them."""
    names = list(names)
    for field_name, pattern in patterns.items():
        unmatched = sorted(k for k in pattern if not any(_matches(k, n) for n in names))
        if unmatched:
            warnings.warn(f"{owner}: the following {field_name} keys did not match any adapted module and were "
                          f"ignored: {unmatched}", RuntimeWarning, stacklevel=4)


def settle(state, name: str, config, adapted: Iterable[str]) -> None:
    """After a build of adapter `name` on the modules named `adapted`: warn about keys that matched none (as peft),
    and swap the adapter's config for one whose patterns do not depend on their order (`order_free`), so every
    save reloads to the same ranks and alphas. `config` has `r`, `alpha`, `rank_pattern`, `alpha_pattern`."""
    if not (config.rank_pattern or config.alpha_pattern):
        return
    adapted = list(adapted)
    warn_unmatched(f"adapter {name!r}", {"rank_pattern": config.rank_pattern,
                                          "alpha_pattern": config.alpha_pattern}, adapted)
    changes = {}
    for field_name, default in (("rank_pattern", config.r), ("alpha_pattern", config.alpha)):
        fixed = order_free(getattr(config, field_name), adapted, default)
        if fixed is not None:
            changes[field_name] = fixed
    replace = getattr(state, "replace_member_config", None)  # a checkpoint's dry run keeps the config as read
    if changes and replace is not None:
        replace(name, config, config.replace(**changes))
