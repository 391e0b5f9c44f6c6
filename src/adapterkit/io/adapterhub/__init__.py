"""The AdapterHub format (adapter-transformers 3.x, `adapters` 1.x): configs, weight names, directories.

A directory holds `adapter_config.json` (keys config, hidden_size, model_type, model_name, model_class, name,
version) and `adapter.safetensors` or `pytorch_adapter.bin`. AdapterHub keys name the model's own modules
(`encoder.layer.3.output.adapters.<name>.adapter_down.0.weight`); adapterkit groups them per adapter
(`layers.3.output_adapter.down.weight`). The architecture interface supplies the module paths (layout.py), each
method's "adapterhub" map (`MethodSpec.formats`) its parameter names, so this package has no per-model and no
per-method knowledge: config.py converts configs, weights.py weight names, directory.py reads and writes.
"""

from .config import config_from_adapterhub, config_to_adapterhub
from .directory import FORMAT, SAFE_WEIGHTS_NAME, WEIGHTS_NAME, is_adapterhub, read, write
from .weights import (fusion_state_dict_from_adapterhub, fusion_state_dict_to_adapterhub, state_dict_from_adapterhub,
                      state_dict_to_adapterhub)

__all__ = ["config_from_adapterhub", "config_to_adapterhub", "FORMAT", "SAFE_WEIGHTS_NAME", "WEIGHTS_NAME",
           "is_adapterhub", "read", "write", "fusion_state_dict_from_adapterhub", "fusion_state_dict_to_adapterhub",
           "state_dict_from_adapterhub", "state_dict_to_adapterhub"]
