"""Prefix tuning (Li & Liang, 2021): learned keys/values prepended in every attention layer. One folder: config,
modules, build and site entries, AdapterHub weight names, and the spec registered below."""

from ...blocks import BatchSplit, Parallel, Stack
from ...registry import MethodSpec, register_method
from . import adapterhub
from .build import before_forward, build, eject, prefix_modules, site_entry
from .config import PrefixTuningConfig
from .modules import FlatPrefixTuning, PrefixTuning

SPEC = register_method(MethodSpec(
    name="prefix_tuning", label="prefix-tuning", config=PrefixTuningConfig, build=build,
    config_names={"prefix_tuning": PrefixTuningConfig(), "prefix_tuning_flat": PrefixTuningConfig(flat=True)},
    before_forward=before_forward, blocks=(Stack, BatchSplit, Parallel), site_entry=site_entry,
    formats={"adapterhub": adapterhub}, api={"eject_prefix_tuning": eject}, exports={"PrefixTuningConfig": PrefixTuningConfig},
))

__all__ = ["SPEC", "PrefixTuningConfig", "PrefixTuning", "FlatPrefixTuning", "eject", "prefix_modules"]
