"""Trained targets (issue 15): MLP files with biases, the constant-input augmentation, the scale kept and undone."""

import argparse

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from test_theory import _cli  # the theory CLI driven in-process, as test_theory drives it
from torch import nn

from strongticket.evaluate import load_ticket_model
from strongticket.theory.constructions import build_model, pensia
from strongticket.theory.targets import target_forward
from strongticket.theory.trained import load_target_file, read_mlp, scale_target
from strongticket.theory.verify import certified_bound, pruned_forward


def _mlp(seed=0, widths=(6, 5, 3), bias=True):
    torch.manual_seed(seed)
    layers = []
    for i in range(len(widths) - 1):
        layers.append(nn.Linear(widths[i], widths[i + 1], bias=bias))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    model = nn.Sequential(*layers).double()
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Linear):
                m.weight.mul_(4.0)  # norms well above 1: the scale must be kept
                if m.bias is not None:
                    m.bias.uniform_(-2, 2)
    return model


def test_augmented_scaled_target_reproduces_the_network_with_biases(tmp_path):
    model = _mlp()
    save_file({k: v.float().contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "m.safetensors"))
    scaled = load_target_file(tmp_path / "m.safetensors", input_radius=3.0)
    assert scaled.augmented and [w.shape for w in scaled.target] == [(6, 7), (3, 6)]
    assert all(np.linalg.norm(w, 2) <= 1 + 1e-12 for w in scaled.target)
    assert scaled.output_scale == pytest.approx(np.prod(scaled.layer_scales) * np.sqrt(3.0**2 + 1))
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(200, 6)))
    want = model.float().double()(x)  # the file holds float32 values
    ws = [torch.from_numpy(w) for w in scaled.target]
    got = target_forward(ws, scaled.unit_inputs(x)) * scaled.output_scale
    assert torch.allclose(got, want, rtol=0, atol=1e-10)
    assert torch.allclose(scaled.original(x), want, rtol=0, atol=1e-12)


def test_a_bias_free_state_dict_is_not_augmented(tmp_path):
    model = _mlp(bias=False)
    torch.save(model.state_dict(), tmp_path / "m.pt")
    scaled = load_target_file(tmp_path / "m.pt")
    assert not scaled.augmented and scaled.input_radius == 1.0
    assert scaled.output_scale == pytest.approx(np.prod([np.linalg.norm(w, 2) for w in scaled.weights]))


def test_construction_on_a_biased_target_matches_it_in_target_units():
    model = _mlp(1)
    weights = [m.weight.detach().numpy() for m in model if isinstance(m, nn.Linear)]
    biases = [m.bias.detach().numpy() for m in model if isinstance(m, nn.Linear)]
    scaled = scale_target(weights, biases, 2.0)
    c = pensia(scaled.target, 0, 40)
    g = pruned_forward(build_model(c))
    x = torch.from_numpy(np.random.default_rng(1).normal(size=(300, 6)))
    x = x / x.norm(dim=1, keepdim=True) * 2.0 * torch.rand(300, 1, dtype=torch.float64)  # ‖x‖ ≤ 2
    with torch.no_grad():
        err_units = (g(scaled.unit_inputs(x)) * scaled.output_scale - model(x)).norm(dim=1)
        ws = [torch.from_numpy(w) for w in scaled.target]
        err_unit_ball = (g(scaled.unit_inputs(x)) - target_forward(ws, scaled.unit_inputs(x))).norm(dim=1)
    # the error in target units is the unit-ball error times S·R, and x'/R lies where the certified bound holds
    assert torch.allclose(err_units, err_unit_ball * scaled.output_scale, rtol=1e-6, atol=1e-12)
    assert 0 < float(err_units.max()) <= certified_bound(c) * scaled.output_scale


@pytest.mark.parametrize(
    "tensors, message",
    [
        ({"0.weight": torch.ones(3, 2), "0.scale": torch.ones(3)}, "keys must end in .weight or .bias"),
        ({"0.weight": torch.ones(3, 2), "1.weight": torch.ones(2, 4)}, "layer '1' takes 4 inputs"),
        ({"0.weight": torch.ones(3, 2), "0.bias": torch.ones(2)}, "0.bias must have shape (3,)"),
        ({"0.weight": torch.full((3, 2), float("nan"))}, "layer '0' has non-finite values"),
        ({"0.bias": torch.ones(3)}, "layer '0' has a bias but no weight"),
    ],
)
def test_bad_mlp_files_raise_one_line(tmp_path, tensors, message):
    save_file(tensors, str(tmp_path / "m.safetensors"))
    with pytest.raises(ValueError) as info:
        read_mlp(tmp_path / "m.safetensors")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_pickled_object_is_refused_without_running_it(tmp_path):
    torch.save({"0.weight": torch.ones(2, 2), "evil": argparse.Namespace(x=1)}, tmp_path / "m.pt")
    with pytest.raises(ValueError, match="weights_only=True"):
        read_mlp(tmp_path / "m.pt")


def test_layers_follow_natural_key_order(tmp_path):
    tensors = {f"{i}.weight": torch.full((2, 2), float(i)) for i in (0, 2, 10)}
    save_file(tensors, str(tmp_path / "m.safetensors"))  # safetensors sorts keys as strings: 0, 10, 2
    weights, _ = read_mlp(tmp_path / "m.safetensors")
    assert [w[0, 0] for w in weights] == [0.0, 2.0, 10.0]


@pytest.mark.slow
def test_cli_verify_a_trained_digits_target_reports_accuracy_and_saves_a_loadable_ticket(capsys, tmp_path):
    from strongticket.data.splits import batches, load_splits

    torch.manual_seed(0)
    splits = load_splits("digits")
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 12), nn.ReLU(), nn.Linear(12, 10))
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for epoch in range(10):
        for b in batches(splits.train, 64, seed=0, epoch=epoch):
            opt.zero_grad()
            nn.functional.cross_entropy(model(b.x), b.labels).backward()
            opt.step()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "mlp.safetensors"))
    code, out = _cli(capsys, "verify", "--target", str(tmp_path / "mlp.safetensors"), "--data", "digits",
                     "--draws", "1", "--block", "40", "--exact", "16", "--samples", "500", "--steps", "10",
                     "--ticket", str(tmp_path / "t.safetensors"))
    assert code == 0 and "with the constant input of its biases" in out
    line = next(ln for ln in out.splitlines() if "digits test" in ln)
    assert "identical predictions" in line
    same = float(line.split("identical predictions ")[1].split("%")[0])
    assert same >= 95.0
    net, ticket, cfg = load_ticket_model(tmp_path / "t.safetensors", device="cpu")
    assert cfg is None and ticket.config["kind"] == "theory"
    assert ticket.config["target"]["augmented"] and ticket.config["target"]["output_scale"] > 1
    # eval rebuilds the ticket and reports the same agreement on the data it was verified on
    from strongticket.cli import main

    assert main(["eval", str(tmp_path / "t.safetensors")]) == 0
    eval_out = capsys.readouterr().out
    assert "target units" in eval_out
    assert f"identical predictions {same:.2f}%" in eval_out


def test_cli_target_errors_are_one_line(capsys, tmp_path):
    with pytest.raises(ValueError, match="data needs --target"):
        _cli(capsys, "verify", "--data", "digits")
    save_file({"0.weight": torch.ones(2, 3)}, str(tmp_path / "m.safetensors"))
    with pytest.raises(ValueError, match="target_widths must not be given with --target"):
        _cli(capsys, "verify", "--target", str(tmp_path / "m.safetensors"), "--target-widths", "3,2")
    with pytest.raises(ValueError, match="target file not found"):
        _cli(capsys, "verify", "--target", str(tmp_path / "nope.safetensors"))
