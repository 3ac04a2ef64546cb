"""Real MNIST (``../shared/data``, skipped where a checkout has no copy), training on a slice of the data
(``train_examples``), and pruning at init on uint8 images."""

from pathlib import Path

import pytest
import torch

from strongticket.config import SearchConfig
from strongticket.data.splits import Split, Splits, load_splits
from strongticket.evaluate import evaluate_ticket
from strongticket.models import model_from_config
from strongticket.nn import masked_layers
from strongticket.search import methods, run_search

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_mnist = pytest.mark.skipif(not (DATA / "MNIST" / "raw").is_dir(),
                                 reason=f"real MNIST not found at {DATA}/MNIST/raw (the project's ../shared/data; "
                                        f"a user's checkout has none)")


def test_train_examples_keeps_the_first_training_examples_and_leaves_validation_and_test_alone():
    full, part = load_splits("digits"), load_splits("digits", train_examples=100)
    assert len(part.train) == 100
    assert torch.equal(part.train.x, full.train.x[:100]) and torch.equal(part.train.labels, full.train.labels[:100])
    assert torch.equal(part.val.x, full.val.x) and torch.equal(part.test.x, full.test.x)


@pytest.mark.parametrize("bad", [0, -3, 1.5, True])
def test_train_examples_out_of_range_is_one_clear_error(bad):
    with pytest.raises(ValueError, match=r"^train_examples must be an integer in \[1, "):
        SearchConfig(train_examples=bad)


def test_train_examples_beyond_the_training_split_names_its_size():
    n = len(load_splits("digits").train)
    with pytest.raises(ValueError, match=rf"^train_examples must be an integer in \[1, {n}\] .*got {n + 1}$"):
        load_splits("digits", train_examples=n + 1)


def test_train_examples_enters_the_digest_only_when_set():
    assert SearchConfig().digest() == SearchConfig(train_examples=None).digest()
    assert SearchConfig(train_examples=500).digest() != SearchConfig().digest()


def test_snip_scores_uint8_images_as_the_network_sees_them_normalized():
    """The prune set is normalized like a training batch: SNIP on uint8 images with (mean, std) picks the same mask
    as on the same images normalized by hand (it crashed on MNIST's uint8 before)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (60, 1, 4, 4), dtype=torch.uint8, generator=g)
    y = torch.arange(60) % 3
    mean, std = (0.2,), (0.3,)
    by_hand = (x.float() / 255 - 0.2) / 0.3

    def mask_of(train: Split) -> list[torch.Tensor]:
        splits = Splits(train, train, train, (1, 4, 4), 3)
        cfg = SearchConfig(algo="snip", density=0.3, widths=(8,), init="kaiming_normal", seed=1)
        model = model_from_config(cfg, splits.input_shape, splits.num_classes)
        methods.build(cfg).prepare(model, splits)
        return [layer.mask.clone() for layer in masked_layers(model)]

    uint8, normalized = mask_of(Split(x, y, mean, std)), mask_of(Split(by_hand, y))
    assert all(torch.equal(a, b) for a, b in zip(uint8, normalized))


@needs_mnist
@pytest.mark.slow
def test_short_search_on_a_slice_of_real_mnist_learns_and_its_ticket_reproduces(tmp_path):
    cfg = SearchConfig(data="mnist", data_root=str(DATA), widths=(300, 100), train_examples=3000, epochs=2,
                       device="cpu", out=str(tmp_path / "run"))
    summary = run_search(cfg, progress=False)
    splits = load_splits("mnist", root=DATA)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (54_000, 6_000, 10_000)
    assert summary["test_acc"] > 0.8  # chance is 0.11; LeNet-300-100 at density 0.5 on 3,000 images, 2 epochs
    assert evaluate_ticket(tmp_path / "run" / "ticket.safetensors", device="cpu")["test_acc"] == summary["test_acc"]


def _benchmark():
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "mnist_methods.py"
    spec = importlib.util.spec_from_file_location("mnist_methods", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["mnist_methods"] = module  # dataclasses and pickling resolve the module through sys.modules
    spec.loader.exec_module(module)
    return module


def test_mnist_benchmark_runs_headline_cells_first_and_every_seed_of_a_cell_together():
    mm = _benchmark()
    args = mm.argparse.Namespace(nets=["lenet"], methods=list(mm.METHODS), protocols=list(mm.PROTOCOLS),
                                 densities=[0.5, 0.01], seeds=[0, 1])
    items = mm.runs(args)
    heads = [(p, a) for p, a, *_ in items]
    assert heads[:4] == [("ours", "edge-popup")] * 4 and heads[4:6] == [("ours", "dense")] * 2
    assert [(d, s) for *_, d, s in items[:4]] == [(0.5, 0), (0.5, 1), (0.01, 0), (0.01, 1)]
    assert len(items) == len(set(items)) == 2 + 2 * 2 * 2 * (len(mm.METHODS) - 1)


def test_mnist_benchmark_maps_iterations_to_mnist_epochs_and_fits_gem_miners_period(tmp_path):
    mm = _benchmark()
    ir = mm.search_config("original", "iterand", "lenet", 0.1, 0, 10, str(tmp_path), str(tmp_path))
    assert ir.batch_size == 128 and ir.rerand_every == round(300 / 352 * -(-54_000 // 128))
    gm = mm.search_config("original", "gem-miner", "lenet", 0.5, 0, 3, str(tmp_path), str(tmp_path))
    assert gm.epochs == 3 and gm.freeze_every == 1
    ours = mm.search_config("ours", "edge-popup", "wide", 0.05, 2, 10, str(tmp_path), str(tmp_path))
    assert (ours.init, ours.scale_fan, ours.widths, ours.seed, ours.data) == ("kaiming_normal", True, (1024, 1024),
                                                                             2, "mnist")
    assert ours.out != mm.search_config("original", "edge-popup", "wide", 0.05, 2, 10, str(tmp_path),
                                        str(tmp_path)).out
