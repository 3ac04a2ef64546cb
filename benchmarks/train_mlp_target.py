"""Train a one-hidden-layer ReLU MLP target for ``strongticket theory verify --target``, saved as a safetensors
state_dict (keys 1.weight [1.bias] 3.weight [3.bias]). The default is the target of Pensia et al.'s MNIST experiment
(NeurIPS 2020, Exp. 1, acnagle/optimal-lottery-tickets): bias-free 784-500-10, their "2-layer FC, hidden 500, no
bias", 97.19%.

    python benchmarks/train_mlp_target.py --data-root ../shared/data --out runs/mnist-784-500-10.safetensors
    python benchmarks/train_mlp_target.py --data digits --hidden 32 --bias --lr 1e-2 --batch 64 --epochs 30 \
        --out runs/digits-64-32-10.safetensors

Inputs are the normalised images of ``strongticket.data`` (the same batches ``theory verify --data`` feeds the
target and the ticket); Adam, seed fixed (torch.manual_seed), one CPU thread. Prints the test accuracy.
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
    p.add_argument("--data", default="mnist", help="strongticket data set (default: mnist)")
    p.add_argument("--data-root", default=None, help="folder holding the data files (MNIST/raw/*.gz)")
    p.add_argument("--out", required=True, help="safetensors file to write")
    p.add_argument("--hidden", type=int, default=500)
    p.add_argument("--bias", action="store_true", help="Linear layers with biases (default: none, as the paper)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    if not 0 < a.lr < 10:
        raise SystemExit(f"lr must be in (0, 10), got {a.lr}")
    if not 1 <= a.batch <= 1 << 16:
        raise SystemExit(f"batch must be in [1, 65536], got {a.batch}")
    if not 1 <= a.hidden <= 1 << 16:
        raise SystemExit(f"hidden must be in [1, 65536], got {a.hidden}")
    if not 1 <= a.epochs <= 1000:
        raise SystemExit(f"epochs must be in [1, 1000], got {a.epochs}")
    torch.manual_seed(a.seed)
    torch.set_num_threads(1)
    splits = load_splits(a.data, root=a.data_root)
    d_in = 1
    for n in splits.input_shape:
        d_in *= n
    model = nn.Sequential(nn.Flatten(), nn.Linear(d_in, a.hidden, bias=a.bias), nn.ReLU(),
                          nn.Linear(a.hidden, splits.num_classes, bias=a.bias))
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    start = time.perf_counter()
    for epoch in range(a.epochs):
        for b in batches(splits.train, a.batch, seed=a.seed, epoch=epoch):
            opt.zero_grad()
            nn.functional.cross_entropy(model(b.x), b.labels).backward()
            opt.step()
    with torch.no_grad():
        correct = sum(int((model(b.x).argmax(1) == b.labels).sum()) for b in batches(splits.test, 1000))
    print(f"test accuracy {correct / len(splits.test):.2%} after {a.epochs} epochs, "
          f"{time.perf_counter() - start:.0f} s")
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}  # 1.weight, 3.weight (+ biases)
    atomic_write(a.out, lambda path: save_file(state, str(path)))
    print(f"target: {a.out}")


if __name__ == "__main__":
    main()
