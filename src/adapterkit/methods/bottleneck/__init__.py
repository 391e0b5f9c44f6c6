"""Bottleneck adapters: Pfeiffer / Houlsby (sequential), parallel, Compacter (PHM layers), NICE invertible
adapters. One folder: configs, modules, build, AdapterHub weight names, and the spec registered below."""

from ...blocks import Average, BatchSplit, Fuse, Parallel, Split, Stack
from ...registry import MethodSpec, register_method
from . import adapterhub
from .build import build
from .config import (BnConfig, CompacterConfig, CompacterPlusPlusConfig, DoubleSeqBnConfig, DoubleSeqBnInvConfig,
                     AdapterPlusConfig, HoulsbyConfig, HoulsbyInvConfig, ParallelConfig, ParBnConfig, PfeifferConfig, PfeifferInvConfig,
                     SeqBnConfig, SeqBnInvConfig)
from .modules import BottleneckAdapter

SPEC = register_method(MethodSpec(
    name="bottleneck", label="bottleneck", config=BnConfig, build=build,
    config_names={
        # adapter-transformers 3.1 names
        "pfeiffer": SeqBnConfig(), "houlsby": DoubleSeqBnConfig(), "pfeiffer+inv": SeqBnInvConfig(),
        "houlsby+inv": DoubleSeqBnInvConfig(), "compacter++": CompacterPlusPlusConfig(), "compacter": CompacterConfig(),
        "parallel": ParBnConfig(), "scaled_parallel": ParBnConfig(scaling="learned"),
        # adapters 1.x names
        "seq_bn": SeqBnConfig(), "double_seq_bn": DoubleSeqBnConfig(), "seq_bn_inv": SeqBnInvConfig(),
        "double_seq_bn_inv": DoubleSeqBnInvConfig(), "par_bn": ParBnConfig(), "scaled_par_bn": ParBnConfig(scaling="learned"),
        # a class in adapters 1.3.0 (AdapterPlusConfig), not in its ADAPTER_CONFIG_MAP; a name here
        "adapterplus": AdapterPlusConfig(),
    },
    blocks=(Stack, Fuse, Split, BatchSplit, Parallel, Average), fusable=True,
    formats={"adapterhub": adapterhub},
    exports={c.__name__: c for c in (BnConfig, SeqBnConfig, SeqBnInvConfig, DoubleSeqBnConfig, DoubleSeqBnInvConfig,
                                     ParBnConfig, CompacterConfig, CompacterPlusPlusConfig, AdapterPlusConfig)}
    | {"PfeifferConfig": PfeifferConfig, "PfeifferInvConfig": PfeifferInvConfig, "HoulsbyConfig": HoulsbyConfig,
       "HoulsbyInvConfig": HoulsbyInvConfig, "ParallelConfig": ParallelConfig},
))

__all__ = ["SPEC", "BnConfig", "SeqBnConfig", "SeqBnInvConfig", "DoubleSeqBnConfig", "DoubleSeqBnInvConfig",
           "AdapterPlusConfig", "ParBnConfig", "CompacterConfig", "CompacterPlusPlusConfig", "PfeifferConfig", "PfeifferInvConfig",
           "HoulsbyConfig", "HoulsbyInvConfig", "ParallelConfig", "BottleneckAdapter"]
