"""The base of every adapter config: a dataclass that validates itself and round-trips through dicts.

Every field is a dataclass field (never a bare class attribute), so `to_dict()` holds all of them and a
reloaded config never silently falls back to defaults (a defect of the reference packages).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Iterable, Mapping, Optional

from ..errors import AdapterConfigError


def number_problem(value: Any, *, minimum: float | None = None, maximum: float | None = None, integer: bool = False,
                   exclusive_min: bool = False, exclusive_max: bool = False) -> str | None:
    """None if `value` is a finite number (an int if `integer`; never a bool) within the bounds, else what it must
    be ("an integer >= 1"). NaN and infinities are never numbers here: they only ever come from broken files."""
    kind = "an integer" if integer else "a finite number"
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    ok = ok and not isinstance(value, bool) and math.isfinite(value)
    if ok and minimum is not None:
        ok = value > minimum if exclusive_min else value >= minimum
    if ok and maximum is not None:
        ok = value < maximum if exclusive_max else value <= maximum
    if ok:
        return None
    lo = "" if minimum is None else ("> " if exclusive_min else ">= ") + str(minimum)
    hi = "" if maximum is None else ("< " if exclusive_max else "<= ") + str(maximum)
    bounds = " and ".join(b for b in (lo, hi) if b)
    return kind + (f" {bounds}" if bounds else "")


@dataclass(eq=False)
class AdapterConfig:
    """Base class; subclasses set `method`, the name of their method ("bottleneck", "lora", ..., "union").

    `architecture` holds the same value under the name checkpoint files use (AdapterHub's `"architecture"` key);
    a subclass may set either one. In adapterkit's code "architecture" means a model architecture only.

    `init_weights_seed` (every method, as in the `adapters` package): when set, every module of the adapter starts
    its initialisation from this seed, so all its layers (and two adapters of the same config) start equal.
    Keyword-only, so it does not shift any subclass's positional fields.
    """

    method: ClassVar[str] = ""
    architecture: ClassVar[str] = ""
    # Subclasses registered here by method, so `AdapterConfig.from_dict` can find the class.
    _by_method: ClassVar[dict[str, type["AdapterConfig"]]] = {}
    init_weights_seed: Optional[int] = field(default=None, kw_only=True)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__
        if "method" in own:
            cls.architecture = own["method"]
        elif "architecture" in own:
            cls.method = own["architecture"]

    def __post_init__(self) -> None:
        # the generic field is checked here: subclasses' validate() never need to call up for it
        self._check_number("init_weights_seed", minimum=0, maximum=2**64 - 1, integer=True, optional=True)
        self.validate()

    # -- validation helpers ---------------------------------------------------------------------
    def validate(self) -> None:  # pragma: no cover - overridden
        """Raise AdapterConfigError naming the field and the allowed values."""

    def _check_choice(self, field_name: str, allowed: Iterable[Any]) -> None:
        """One of `allowed`, of the same type (so 1 is not True, and 1.0 not 1)."""
        value = getattr(self, field_name)
        allowed = tuple(allowed)
        if not any(type(value) is type(a) and value == a for a in allowed):
            raise AdapterConfigError(
                f"{type(self).__name__}.{field_name}={value!r} is not allowed; "
                f"allowed values: {', '.join(repr(a) for a in allowed)}"
            )

    def _check_number(self, field_name: str, *, minimum: float | None = None, maximum: float | None = None,
                      integer: bool = False, exclusive_min: bool = False, exclusive_max: bool = False,
                      optional: bool = False) -> None:
        """A number (never a bool), finite, within the bounds; `optional`: None is allowed too."""
        value = getattr(self, field_name)
        if optional and value is None:
            return
        problem = number_problem(value, minimum=minimum, maximum=maximum, integer=integer,
                                 exclusive_min=exclusive_min, exclusive_max=exclusive_max)
        if problem:
            raise AdapterConfigError(
                f"{type(self).__name__}.{field_name}={value!r} must be {'None or ' if optional else ''}{problem}"
            )

    def _check_bool(self, *field_names: str) -> None:
        for name in field_names:
            if not isinstance(getattr(self, name), bool):
                raise AdapterConfigError(
                    f"{type(self).__name__}.{name}={getattr(self, name)!r} must be True or False"
                )

    def _check_str(self, field_name: str, allowed: Iterable[str] | None = None, *, lower: bool = False) -> None:
        """A string (lower-cased first with `lower`), one of `allowed` if given."""
        value = getattr(self, field_name)
        if not isinstance(value, str):
            raise AdapterConfigError(f"{type(self).__name__}.{field_name}={value!r} must be a string"
                                     + (f"; allowed values: {', '.join(map(repr, allowed))}" if allowed else ""))
        if lower:
            setattr(self, field_name, value.lower())
        if allowed is not None:
            self._check_choice(field_name, allowed)

    def _check_layer_list(self, field_name: str) -> None:
        value = getattr(self, field_name)
        if not isinstance(value, (list, tuple)) or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
            raise AdapterConfigError(
                f"{type(self).__name__}.{field_name}={value!r} must be a list of layer indices (ints >= 0)"
            )

    def _check_names(self, field_name: str, allowed: Iterable[str]) -> None:
        """A list of strings drawn from `allowed` (duplicates dropped, order kept)."""
        value, allowed = getattr(self, field_name), tuple(allowed)
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v in allowed for v in value):
            raise AdapterConfigError(f"{type(self).__name__}.{field_name}={value!r} must be a list drawn from "
                                     f"{list(allowed)}")
        setattr(self, field_name, list(dict.fromkeys(value)))

    def union_conflict(self, other: "AdapterConfig") -> str | None:
        """Why this config cannot sit in one ConfigUnion with `other` (None: it can). One per method by default."""
        if other.method != self.method:
            return None
        return (f"two {self.method} configs cannot be combined; allowed: one per method "
                "(two bottlenecks only at different locations)")

    # -- dict round trip ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Every field plus the method under the files' key `architecture`, JSON-serialisable."""
        out: dict[str, Any] = {"architecture": self.method}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "AdapterConfig":
        """Inverse of `to_dict`. On the base class, the class is chosen by the method (key `architecture`)."""
        if not isinstance(data, Mapping):
            raise AdapterConfigError(f"an adapter config dict must be a mapping of field names to values, got "
                                     f"{type(data).__name__}")
        data = dict(data)
        method = data.pop("architecture", cls.method or "bottleneck")
        target = cls
        if cls is AdapterConfig or cls.method != method:
            target = AdapterConfig._by_method.get(method or "bottleneck") if isinstance(method, (str, type(None))) \
                else None
            if target is None:
                raise AdapterConfigError(
                    f"unknown adapter architecture {method!r}; allowed: "
                    f"{', '.join(sorted(AdapterConfig._by_method))}"
                )
        return target._from_fields(data)

    @classmethod
    def _check_keys(cls, keys) -> None:
        names = {f.name for f in fields(cls)}
        unknown = sorted(repr(k) for k in keys if k not in names)
        if unknown:
            raise AdapterConfigError(
                f"unknown key(s) {', '.join(unknown)} for {cls.__name__}; "
                f"allowed keys: {', '.join(sorted(names))}"
            )

    @classmethod
    def _from_fields(cls, data: Mapping[str, Any]) -> "AdapterConfig":
        cls._check_keys(data)
        required = sorted(f.name for f in fields(cls) if f.init and f.name not in data
                          and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
        if required:  # a family's base config with no defaults of its own (ReftConfig, as the `adapters` package)
            raise AdapterConfigError(f"{cls.__name__} needs {', '.join(required)} (it has no defaults); give them or "
                                     "use one of its named configs")
        return cls(**data)

    def replace(self, **changes: Any) -> "AdapterConfig":
        """A copy with some fields changed (validated like a fresh config)."""
        self._check_keys(changes)
        return dataclasses.replace(self, **changes)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AdapterConfig) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:  # configs are mutable dataclasses; hash by identity
        return id(self)

    @classmethod
    def register_method(cls, config_cls: type["AdapterConfig"]) -> type["AdapterConfig"]:
        """Class decorator: the class that `from_dict` builds for its `method`."""
        AdapterConfig._by_method[config_cls.method] = config_cls
        return config_cls

    register_architecture = register_method  # the first release's name, kept for code that calls it
