"""How composition blocks run at each kind of attach point.

A setup (`Stack`, `Fuse`, `Split`, `BatchSplit`, `Parallel`, `Average`) is compiled once per site into a small
tree of the modules found there (`plan.py`, `tree.py`; cached per setup by the state); each site kind evaluates
it with its own rules:

- `bottleneck.py`: residual sites (bottleneck adapters, AdapterFusion): all blocks, the anchors' semantics.
- `lora.py`: projections (LoRA, (IA)^3): Stack, BatchSplit, Parallel, Average.
- `prefix.py`: attention keys/values (prefix tuning): Stack, BatchSplit, Parallel.
- `invertible.py`: NICE invertible adapters: the first adapter of each row's setup.
- `routing.py`: per-example setups of one forward (`model(..., adapter_names=[...])`).
- `support.py`: which method supports which block; the error for anything else.

A plain Stack of names keeps the original fast path (a tuple of modules).
"""
