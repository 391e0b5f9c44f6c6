"""The built-in methods: each is one folder that registers its `MethodSpec` on import (registry.py).

Adding a method is one new folder plus one line here.
"""

from . import bottleneck, lora, loha, lokr, prefix_tuning, reft  # noqa: F401  (each registers itself)
from . import mtl_lora, prompt_tuning  # noqa: F401
from . import presets  # noqa: F401  (MAM, UniPELT: unions of the above)
