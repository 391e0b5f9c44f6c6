"""Extra forward arguments on an adapter model, handled around the model's own forward.

`model(..., output_adapter_gating_scores=True)` is popped before the model sees it (its forward does not know it),
gates record their values while the forward runs, and the output gains `adapter_gating_scores`:
`{adapter_name: {layer_id: {location: np.ndarray (batch, gate heads)}}}`.
"""

from __future__ import annotations

from transformers.utils import ModelOutput

OUTPUT_GATING = "output_adapter_gating_scores"


def install(model, state) -> None:
    def before(module, args, kwargs):
        state.gating_scores = {} if kwargs.pop(OUTPUT_GATING, False) else None
        return args, kwargs

    def after(module, args, kwargs, output):
        scores, state.gating_scores = state.gating_scores, None
        if scores is None:
            return None
        if isinstance(output, ModelOutput):
            output["adapter_gating_scores"] = scores
            return output
        if isinstance(output, tuple):
            return output + (scores,)
        return output

    model.register_forward_pre_hook(before, with_kwargs=True)
    model.register_forward_hook(after, with_kwargs=True, always_call=True)
