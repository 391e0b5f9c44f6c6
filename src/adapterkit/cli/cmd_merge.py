"""`adapterkit merge`: write a plain transformers checkpoint with a mergeable adapter (LoRA, (IA)^3, LoHa, LoKr) merged into its weights."""

from __future__ import annotations

ORDER = 4


def register(sub) -> None:
    p = sub.add_parser("merge", help="merge an adapter (LoRA, (IA)^3, LoHa, LoKr) into the weights, save a plain checkpoint",
                       description="Load the base model, load the adapter, merge it, and save a transformers "
                                   "checkpoint (no adapterkit needed to use it) that gives the same outputs.")
    p.add_argument("--adapter-dir", required=True)
    p.add_argument("--model", default="minilm", help="checkpoint directory or 'minilm' (default)")
    p.add_argument("--output-dir", required=True)
    p.set_defaults(run=run)


def run(args) -> int:
    from .models import offline
    offline()
    from transformers import AutoModel

    import adapterkit

    from .models import resolve_model_path
    from .outputs import check_written, output_dir

    path = resolve_model_path(args.model)
    out = output_dir(args.output_dir)
    model = adapterkit.init(AutoModel.from_pretrained(path, local_files_only=True))
    name = model.load_adapter(args.adapter_dir, with_head=False)
    model.merge_adapter(name)
    plain = {k: v for k, v in model.state_dict().items() if not k.startswith("adapterkit.")}
    model.save_pretrained(out, state_dict=plain)
    check_written(out, "the merged checkpoint")
    print(f"merged adapter {name!r} into {path}; saved a plain transformers checkpoint to {out}")
    return 0
