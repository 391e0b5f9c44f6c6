"""Per-example adapter setups: `model(..., adapter_names=[...])`, one setup (a name, a block, or None / "__base__"
for the plain model, the latter as in peft) per row of the batch.

The forward pre-hook builds one `Routing` per call: rows grouped by setup. Inside generate(), whose steps route the
same rows the same way, the first step's routing serves every later step (with what its sites cached), so the
per-row bookkeeping is paid once per generate() rather than once per token. Plain forwards keep their last few
routings too (`AdapterState.plans.routings`, cleared with the plans on any change of adapters or setups), so a
serving or eval loop calling the model with the same rows pays it once; they never keep what a site derived from
the weights, which may change between forwards (an optimizer step, a hot swap). At each site, `Routing.at` gives the
site a `Routed` plan (each group's own compiled plan with its row indices) or, when every row shares one setup,
that setup's plan directly. LoRA / (IA)^3 sites run a `Routed` plan in one vectorised pass (compose/projection.py);
the other sites run each group on its rows.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from ..blocks import AdapterCompositionBlock, parse_composition
from ..errors import AdapterError

_MISSING = object()
BASE_ROW = "__base__"  # peft's name for "no adapter on this row"; reserved (naming.py), so never an adapter's


class Routed:
    """One site's plans per group of rows: `groups` = [(plan, row index tensor)], `group_ids[row]` = its group."""

    __slots__ = ("groups", "group_ids", "rows", "shared", "memo")

    def __init__(self, groups: list, group_ids: torch.Tensor, rows: int, shared: dict):
        self.groups, self.group_ids, self.rows = groups, group_ids, rows
        self.shared = shared  # the routing's cache shared by all sites (e.g. per-row slot tensors)
        self.memo: dict = {}  # this site's own cache (e.g. how its groups split by kind), kept with the routing

    def rows_of(self, per_group: tuple) -> torch.Tensor:
        """A per-row tensor from one value per group (cached for the forward: sites mostly share them)."""
        found = self.shared.get(per_group)
        if found is None:
            found = self.shared[per_group] = torch.tensor(per_group, device=self.group_ids.device)[self.group_ids]
        return found

    def gather_run(self, fn: Callable) -> torch.Tensor:
        """`fn(plan, rows)` per group, the results put back in row order."""
        out = None
        for plan, rows in self.groups:
            result = fn(plan, rows)
            if out is None:
                out = result.new_empty((self.rows, *result.shape[1:]))
            out[rows] = result
        return out


class Routing:
    """The grouping of one forward's rows by their setup."""

    def __init__(self, state, names: Sequence, rows: int, device):
        if isinstance(names, (str, AdapterCompositionBlock)) or not isinstance(names, Sequence):
            raise AdapterError(f"adapter_names must be a list with one adapter name (or None / {BASE_ROW!r}) per row, "
                               f"got {names!r}")
        if len(names) != rows:
            raise AdapterError(f"adapter_names has {len(names)} entries for a batch of {rows} rows; give one per row")
        members: dict = {}
        for row, name in enumerate(names):
            members.setdefault(None if name is None or name == BASE_ROW else parse_composition(name), []).append(row)
        for setup in members:
            if setup is None:
                continue
            state.check_setup(setup)
            if setup.parallel_channels > 1:
                raise AdapterError(f"adapter_names cannot route rows to {setup!r}: Parallel changes the batch size")
        self.state, self.rows, self.names, self.device = state, rows, list(names), torch.device(device)
        ids = torch.empty(rows, dtype=torch.long)
        for group, members_rows in enumerate(members.values()):
            ids[members_rows] = group
        self.group_ids = ids.to(device)
        self.groups = [(setup, torch.tensor(r, dtype=torch.long, device=device)) for setup, r in members.items()]
        self._sites: dict = {}
        self._shared: dict = {}

    def freeze(self) -> None:
        """generate() reuses this routing for a further step. No weight changes inside one generate(), so from now
        on sites may keep what they derived from the adapters' weights (segmented.py's stacks) for the next step:
        `shared["frozen"]`."""
        self._shared["frozen"] = True

    def matches(self, names: Sequence, rows: int, device) -> bool:
        """Whether this routing serves a forward of `rows` rows routed by `names` on `device`."""
        return rows == self.rows and torch.device(device) == self.device and list(names) == self.names

    def at(self, key: tuple):
        plan = self._sites.get(key, _MISSING)
        if plan is _MISSING:
            plan = self._sites[key] = self._plan_at(key)
        return plan

    def _plan_at(self, key: tuple):
        plans = [(self.state.plan_for(setup).get(key, ()), rows) for setup, rows in self.groups]
        if len(plans) == 1:
            return plans[0][0]
        if not any(plan for plan, _ in plans):
            return ()
        return Routed(plans, self.group_ids, self.rows, self._shared)
