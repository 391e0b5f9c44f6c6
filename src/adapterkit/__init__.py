"""adapterkit: parameter-efficient fine-tuning for HuggingFace transformers 5.x, as a plugin.

    import adapterkit
    adapterkit.init(model)
    model.add_adapter("a", config="lora[r=8,alpha=16]")
    model.train_adapter("a")
"""

from .cli.interrupt import guard_command_start

guard_command_start()  # the `adapterkit` command only: Ctrl-C while the imports below run -> one line, exit 130

from . import blocks as composition  # noqa: F401  (the composition blocks' module under its 0.1 name)
from . import methods  # noqa: F401  (the built-in methods register themselves)
from .blocks import Average, BatchSplit, Fuse, MultiTask, Parallel, Split, Stack, parse_composition
from .configs import ADAPTER_CONFIG_MAP, DEFAULT_ADAPTER_CONFIG, AdapterConfig, ConfigUnion, resolve_config
from .context import AdapterSetup
from .errors import AdapterConfigError, AdapterError, CheckpointError
from .fusion import AdapterFusionConfig, DynamicAdapterFusionConfig, StaticAdapterFusionConfig
from .heads import AdapterModel, AutoAdapterModel
from .interfaces import (FusedSlice, ModelInterface, ResidualSite, SublayerSite, TaskHead, register_interface,
                         supported_model_types)
from .methods.bottleneck import (BnConfig, CompacterConfig, CompacterPlusPlusConfig, DoubleSeqBnConfig,
                                 DoubleSeqBnInvConfig, HoulsbyConfig, HoulsbyInvConfig, ParallelConfig, ParBnConfig,
                                 PfeifferConfig, PfeifferInvConfig, SeqBnConfig, SeqBnInvConfig)
from .methods.bottleneck import AdapterPlusConfig
from .methods.lora import IA3Config, LoRAConfig
from .methods.prefix_tuning import PrefixTuningConfig
from .methods.presets import MAMConfig, UniPELTConfig
from .kbit import prepare_model_for_kbit_training
from .model import AdapterModelMixin, init
from .registry import MethodSpec, register_method, specs
from .version import __version__

__all__ = [
    "init", "AdapterModelMixin", "AdapterSetup", "AdapterError", "AdapterConfigError", "CheckpointError",
    "AdapterConfig", "BnConfig", "SeqBnConfig", "SeqBnInvConfig", "DoubleSeqBnConfig", "DoubleSeqBnInvConfig",
    "ParBnConfig", "PfeifferConfig", "PfeifferInvConfig", "HoulsbyConfig", "HoulsbyInvConfig", "ParallelConfig",
    "LoRAConfig", "IA3Config", "CompacterConfig", "CompacterPlusPlusConfig", "PrefixTuningConfig", "ConfigUnion",
    "MAMConfig", "UniPELTConfig", "ADAPTER_CONFIG_MAP", "DEFAULT_ADAPTER_CONFIG", "resolve_config",
    "Stack", "Fuse", "Split", "BatchSplit", "Parallel", "Average", "MultiTask", "parse_composition",
    "AdapterFusionConfig", "StaticAdapterFusionConfig", "DynamicAdapterFusionConfig",
    "ModelInterface", "ResidualSite", "SublayerSite", "FusedSlice", "TaskHead", "register_interface",
    "supported_model_types", "AutoAdapterModel", "AdapterModel", "AdapterTrainer", "MethodSpec", "register_method",
    "__version__", "AdapterPlusConfig", "AdapterDropCallback", "prepare_model_for_kbit_training",
]


def __getattr__(name):
    # The Trainer pulls in accelerate & co.; import it only when asked for.
    if name == "AdapterTrainer":
        from .training import AdapterTrainer
        return AdapterTrainer
    if name == "AdapterDropCallback":
        from .adapterdrop import AdapterDropCallback
        return AdapterDropCallback
    for spec in specs():  # a method's public config classes (`exports`), without a line here per method
        if name in spec.exports:
            return spec.exports[name]
    raise AttributeError(f"module 'adapterkit' has no attribute {name!r}")
