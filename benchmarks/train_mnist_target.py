"""Train the target of Pensia et al.'s MNIST experiment: a bias-free 784-500-10 ReLU MLP (their "2-layer FC, hidden
500, no bias", 97.19%), saved as a safetensors state_dict for ``strongticket theory verify --target``.

    python benchmarks/train_mnist_target.py --data-root ../shared/data --out runs/mnist-784-500-10.safetensors

Inputs are the normalised MNIST images of ``strongticket.data`` (the same ``--data mnist`` batches ``theory verify``
feeds the target and the ticket); Adam, lr 1e-3, batch 128, seed fixed (torch.manual_seed), one CPU thread.
Prints the test accuracy. Pensia et al. NeurIPS 2020, Exp. 1 (acnagle/optimal-lottery-tickets).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from strongticket.data.splits import batches, load_splits
from strongticket.files import atomic_write


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", required=True, help="folder holding MNIST/raw/*.gz")
    p.add_argument("--out", required=True, help="safetensors file to write")
    p.add_argument("--hidden", type=int, default=500)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    if not 1 <= a.hidden <= 1 << 16:
        raise SystemExit(f"hidden must be in [1, 65536], got {a.hidden}")
    if not 1 <= a.epochs <= 1000:
        raise SystemExit(f"epochs must be in [1, 1000], got {a.epochs}")
    torch.manual_seed(a.seed)
    torch.set_num_threads(1)
    splits = load_splits("mnist", root=a.data_root)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, a.hidden, bias=False), nn.ReLU(), nn.Linear(a.hidden, 10,
                                                                                                   bias=False))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    start = time.perf_counter()
    for epoch in range(a.epochs):
        for b in batches(splits.train, 128, seed=a.seed, epoch=epoch):
            opt.zero_grad()
            nn.functional.cross_entropy(model(b.x), b.labels).backward()
            opt.step()
    with torch.no_grad():
        correct = sum(int((model(b.x).argmax(1) == b.labels).sum()) for b in batches(splits.test, 1000))
    print(f"test accuracy {correct / len(splits.test):.2%} after {a.epochs} epochs, "
          f"{time.perf_counter() - start:.0f} s")
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}  # 1.weight, 3.weight
    atomic_write(a.out, lambda path: save_file(state, str(path)))
    print(f"target: {a.out}")


if __name__ == "__main__":
    main()
