"""Which projections a weight-update method adapts: attention matrices, the FFN input and output, layers left out.

Shared by the methods that add a weight update `dW` to a projection (LoHa, LoKr: peft's LyCORIS family), so each
config states its targets the same way and the PEFT reader turns peft's module lists into them in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from ..errors import AdapterConfigError
from .module_targets import check_module_targets

ATTN_MATRICES = ("q", "k", "v", "o")


@dataclass(eq=False)
class ProjectionTargets:
    """`attn_matrices` (self- and cross-attention alike), `intermediate` / `output` (the FFN's input and output
    projections), `leave_out` (layer indices without the adapter)."""

    attn_matrices: list = field(default_factory=lambda: ["q", "v"])
    intermediate: bool = False
    output: bool = False
    leave_out: list = field(default_factory=list)
    # peft's module selection (module_targets.py); None: the location fields above
    target_modules: list | str | None = None
    exclude_modules: list | str | None = None

    def check_targets(self) -> None:
        targeted = check_module_targets(self)
        self._check_bool("intermediate", "output")
        self._check_layer_list("leave_out")
        if not isinstance(self.attn_matrices, (list, tuple)) or any(m not in ATTN_MATRICES for m in self.attn_matrices):
            raise AdapterConfigError(f"{type(self).__name__}.attn_matrices={self.attn_matrices!r} must be a list "
                                     f"drawn from {list(ATTN_MATRICES)}")
        self.attn_matrices = list(dict.fromkeys(self.attn_matrices))
        if not targeted and not (self.attn_matrices or self.intermediate or self.output):
            raise AdapterConfigError(f"{type(self).__name__} targets no projection: set attn_matrices, "
                                     "intermediate or output")

    def locations(self, interface) -> list:
        """(location, projection spec) of the interface that this config adapts."""
        return interface.linear_locations(attn_matrices=self.attn_matrices, intermediate=self.intermediate,
                                          output=self.output)


def targets_from_peft(found: Mapping[str, Any]) -> dict[str, Any]:
    """io/peft's description of the projections a PEFT adapter covers -> ProjectionTargets fields."""
    if "target_modules" in found:  # a module-targeted adapter (module_targets.py): its fields as they are
        return dict(found)
    return {"attn_matrices": list(found["attn_matrices"]) if found["selfattn_lora"] else [],
            "intermediate": found["intermediate_lora"], "output": found["output_lora"],
            "leave_out": list(found["leave_out"])}

