"""`adapterkit convert`: move an adapter between the adapterkit, AdapterHub and PEFT formats."""

from __future__ import annotations

ORDER = 5
FORMATS = ("adapterkit", "adapterhub", "peft")


def register(sub) -> None:
    p = sub.add_parser("convert", help="convert an adapter directory between adapterkit, AdapterHub and PEFT formats",
                       description="Read an adapter directory (format detected) and write it in --to format. The "
                                   "base model is needed to check and place the weights.")
    p.add_argument("--adapter-dir", required=True)
    p.add_argument("--to", required=True, choices=FORMATS)
    p.add_argument("--output-dir", required=True)
    p.add_argument("--model", default="minilm", help="checkpoint directory or 'minilm' (default)")
    p.set_defaults(run=run)


def run(args) -> int:
    from .models import offline
    offline()
    import adapterkit

    from .models import resolve_model_path
    from .outputs import check_written, output_dir

    path = resolve_model_path(args.model)
    out = output_dir(args.output_dir)
    model = adapterkit.AutoAdapterModel.from_pretrained(path, local_files_only=True)
    name = model.load_adapter(args.adapter_dir)
    model.save_adapter(out, name, format=args.to)
    check_written(out, "the converted adapter")
    print(f"converted adapter {name!r} to {args.to} format in {args.output_dir}")
    return 0
