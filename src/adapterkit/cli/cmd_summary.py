"""`adapterkit summary`: the adapter summary table for a model and config names, or the list of config names."""

from __future__ import annotations

ORDER = 3


def register(sub) -> None:
    p = sub.add_parser("summary", help="print adapter_summary() for a model and adapter configs",
                       description="Build the model (from a checkpoint or a config.json; on the meta device, so no "
                                   "weights are loaded), add each --adapter, print the summary table.")
    p.add_argument("--model", default="minilm", help="checkpoint directory, config.json, or 'minilm' (default)")
    p.add_argument("--adapter", action="append", default=[], metavar="CONFIG",
                   help="config name or string, e.g. lora or 'lora[r=4]' (repeatable); default: all names")
    p.add_argument("--list-configs", action="store_true", help="list the config names and exit")
    p.set_defaults(run=run)


def run(args) -> int:
    import torch
    from transformers import AutoModel

    import adapterkit

    from .models import load_config, offline, resolve_model_path

    if args.list_configs:
        for name, config in adapterkit.ADAPTER_CONFIG_MAP.items():
            print(f"{name:<22}{config.method}")
        return 0
    offline()
    config = load_config(resolve_model_path(args.model))
    with torch.device("meta"):
        model = adapterkit.init(AutoModel.from_config(config))
        for spec in args.adapter or list(adapterkit.ADAPTER_CONFIG_MAP):
            model.add_adapter(spec.split("[")[0].replace("|", "+") if spec else spec, config=spec)
    print(model.adapter_summary())
    return 0
