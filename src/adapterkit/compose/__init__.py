"""How composition blocks run at each kind of attach point.

A setup (`Stack`, `Fuse`, `Split`, `BatchSplit`, `Parallel`, `Average`) is compiled once per site into a small
tree of the modules found there (`plan.py`, `tree.py`; cached per setup by the state); each site kind evaluates
it with its own rules:

- `residual.py`: residual sites (bottleneck adapters, AdapterFusion): all blocks, the `adapters` package's
  semantics.
- `projection.py`: projections (LoRA, (IA)^3): Stack, BatchSplit, Parallel, Average.
- `attention.py`: attention keys/values (prefix tuning): Stack, BatchSplit, Parallel.
- `invertible.py`: invertible adapters on the embeddings: the first adapter of each row's setup.
- `routing.py`: per-example setups of one forward (`model(..., adapter_names=[...])`).
- `support.py`: each method's declared blocks (`MethodSpec.blocks`); the error for anything else.

The modules are reached through small protocols (documented in each file), never by their classes.

A plain Stack of names keeps the original fast path (a tuple of modules).
"""
