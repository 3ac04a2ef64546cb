"""A searched ticket, baked to dense, as a theory target."""

import pytest
import torch

from strongticket.config import SearchConfig
from strongticket.evaluate import load_ticket_model
from strongticket.nn import masked_layers
from strongticket.search import run_search
from strongticket.theory.targets import target_forward, target_from_ticket


def test_a_search_ticket_becomes_a_target_with_the_same_function(tmp_path):
    run_search(SearchConfig(out=str(tmp_path), widths=(12,), epochs=1, density=0.3), progress=False)
    ticket = tmp_path / "ticket.safetensors"
    target = target_from_ticket(ticket, scale=True)
    model, _, _ = load_ticket_model(ticket, device="cpu")
    layers = masked_layers(model)
    assert [tuple(w.shape) for w in target] == [tuple(la.weight.shape) for la in layers]
    norms = [torch.linalg.matrix_norm(torch.as_tensor(w, dtype=torch.float64), ord=2) for w in target]
    assert all(n <= 1 + 1e-9 for n in norms)  # scaled to the theorem's assumption
    # scaling each layer by a positive factor scales the bias-free ReLU net by their product
    x = torch.rand(5, 64, dtype=torch.float64)
    with torch.no_grad():
        dense = model(x.float().view(5, 1, 8, 8)).double()
    out = target_forward([torch.as_tensor(w, dtype=torch.float64) for w in target], x)
    c = (out * dense).sum() / (dense * dense).sum()
    assert c > 0 and dense.abs().max() > 0
    torch.testing.assert_close(out, c * dense, rtol=1e-4, atol=1e-6 * float(out.abs().max()))
    with pytest.raises(ValueError):
        target_from_ticket(ticket, scale=False)  # spectral norms above 1 are rejected with a clear message
