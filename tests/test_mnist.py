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
