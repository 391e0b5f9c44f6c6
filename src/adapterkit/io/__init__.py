"""Checkpoint formats: adapterkit's own (native.py), AdapterHub (adapterhub/) and PEFT (peft.py); AdapterFusion
checkpoints (fusion.py).

`checkpoint.py` picks the format and validates before changing a model; `staging.py` makes each save one commit
(`one_commit(directory)` joins several saves into one); `files.py` holds safe reads; `validate.py` checks weights
against the modules a config builds.
"""

from .adapterhub import (config_from_adapterhub, config_to_adapterhub, fusion_state_dict_from_adapterhub,
                         fusion_state_dict_to_adapterhub, state_dict_from_adapterhub, state_dict_to_adapterhub)
from .checkpoint import FORMATS, load_adapter, read_checkpoint, save_adapter, save_all_adapters
from .staging import one_commit

__all__ = ["config_from_adapterhub", "config_to_adapterhub", "fusion_state_dict_from_adapterhub",
           "fusion_state_dict_to_adapterhub",
           "state_dict_from_adapterhub", "state_dict_to_adapterhub", "FORMATS",
           "load_adapter", "one_commit", "read_checkpoint", "save_adapter", "save_all_adapters"]
