"""ViT: an image-classification forward (pixel values -> logits) and a training step with each method."""

from __future__ import annotations

import pytest
import torch
from transformers import ViTForImageClassification

import adapterkit

import archs
from test_architectures import IDENTITY, METHODS


def classifier():
    return adapterkit.init(archs.model("vit", cls=ViTForImageClassification, num_labels=3))


@pytest.mark.parametrize("method", list(METHODS))
def test_vit_image_classification(method):
    model = classifier()
    pixels = archs.inputs("vit")["pixel_values"]
    labels = torch.tensor([0, 2, 1])
    with torch.no_grad():
        before = model(pixel_values=pixels).logits
    model.add_adapter("a", config=METHODS[method])
    model.train_adapter("a")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"adapterkit.a.{n}" for n, _ in model.adapterkit["a"].named_parameters()} | {
        "classifier.weight", "classifier.bias"}
    out = model(pixel_values=pixels, labels=labels)
    assert out.logits.shape == (3, 3)
    if method in IDENTITY:
        assert torch.equal(out.logits.detach(), before)
    else:
        assert not torch.equal(out.logits.detach(), before)
    out.loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if n.startswith("adapterkit.")]
    assert all(g is not None for g in grads) and any(g.abs().max() > 0 for g in grads)
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5).step()
    model.eval()
    with torch.no_grad():
        after = model(pixel_values=pixels).logits
        with adapterkit.AdapterSetup(None):
            plain = model(pixel_values=pixels).logits
    assert (after - before).abs().max() > 1e-4  # one step moved the predictions
    assert (after - plain).abs().max() > 0  # partly through the adapter (plain differs only by the head)
