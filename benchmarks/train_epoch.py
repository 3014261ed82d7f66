"""Time one training epoch: train.py's in-memory loop against the textbook DataLoader loop, and the
share of it that the BLAS's matrix products take.

The textbook loop (pytorch/examples' mnist) builds every sample with a PIL image and ToTensor inside
the epoch. Both loops train the same model with the same optimizer, batch size and data; they take
turns, and the medians of --repeats epochs each are compared. Then one step's matrix products alone, on
random matrices of its shapes, timed and counted for the epoch's samples, against one large product:
what bounds an epoch, and so every training run of scripts/make.sh.

    python benchmarks/train_epoch.py --dataset fashion-mnist
"""
import argparse
import gzip
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import data  # noqa: E402
import train  # noqa: E402
import utils  # noqa: E402
from model import MLP  # noqa: E402
from benchmarks.harness import machine, torch_benchmark  # noqa: E402

LARGE = 2048  # the side of the square product that shows the BLAS near its best


def textbook_epoch(model, loader, optimizer, l1):
    model.train()
    for images, labels in loader:
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for weight in model.hidden.parameters():  # the same L1 step as train.py's loop
            weight.grad.add_(weight.detach().sign(), alpha=l1)
        optimizer.step()


def textbook_dataset(dataset, data_dir, transform):
    """torchvision's own dataset, as the textbook loop takes it. It reads only uncompressed IDX files, in
    <root>/<Class>/raw, so the files data.py reads (.gz or not, there or in data_dir itself) are unpacked into a
    temporary root first; the dataset holds the images in memory once made, and the root can go."""
    from torchvision import datasets

    class_name = data.DATASETS[dataset][0]
    folders = data.idx_folders(class_name, data_dir)
    with tempfile.TemporaryDirectory() as root:
        raw = Path(root) / class_name / "raw"
        raw.mkdir(parents=True)
        for name in (*data.SPLITS["train"], *data.SPLITS["test"]):  # torchvision checks for all four
            path = data.find_file(folders, name)
            if path is None:
                raise utils.UserError(f"no {name} (.gz or not) in {folders[0]} or {folders[1]}: "
                                      "the textbook loop's torchvision dataset needs all four IDX files")
            with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
                (raw / name).write_bytes(f.read())
        return getattr(datasets, class_name)(root, train=True, download=False, transform=transform)


def step_products(model, batch_size):
    """One training step's matrix products, as a function on random matrices of their shapes, and their floating-point
    operations: each layer's forward, its weight's gradient, and its input's gradient, which the first layer's input,
    the images, does not need."""
    weights = [layer.weight.detach() for layer in model.layers]
    inputs = [torch.randn(batch_size, w.shape[1]) for w in weights]
    output_grads = [torch.randn(batch_size, w.shape[0]) for w in weights]

    def products():
        for i, (w, x, g) in enumerate(zip(weights, inputs, output_grads)):
            torch.mm(x, w.t())
            torch.mm(g.t(), x)
            if i:
                torch.mm(g, w)

    flops = 2 * batch_size * sum(w.numel() * (3 if i else 2) for i, w in enumerate(weights))
    return products, flops


def seconds_each(fn):
    """fn's median time a call, on the threads the epochs ran on (a Timer's default is one)."""
    timer = torch_benchmark().Timer("fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=2).median


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=data.DATASETS, default="mnist", help="default: %(default)s")
    parser.add_argument("--data-dir", default="data", help="default: %(default)s")
    parser.add_argument("--batch-size", type=utils.positive_int, default=128, help="default: %(default)s")
    parser.add_argument("--l1", type=float, default=train.L1, help="default: %(default)s, train.py's")
    parser.add_argument("--repeats", type=utils.positive_int, default=3, help="epochs per loop; default: %(default)s")
    args = parser.parse_args(argv)

    from torchvision import transforms

    _, mean, std = data.DATASETS[args.dataset]
    train_data = data.load_data(args.dataset, args.data_dir, "train", download=False)
    to_tensor = transforms.Compose([transforms.ToTensor(), transforms.Normalize((mean,), (std,))])
    textbook_set = textbook_dataset(args.dataset, Path(args.data_dir), to_tensor)
    loader = torch.utils.data.DataLoader(textbook_set, batch_size=args.batch_size, shuffle=True)

    torch.manual_seed(0)
    model = MLP()
    optimizer, _ = utils.sgd(model, lr=0.01, steps=1)  # train.py's optimizer: a step costs the same at any rate
    shuffle = torch.Generator().manual_seed(0)
    times = {"in-memory (train.py)": [], "textbook DataLoader": []}
    for _ in range(args.repeats):
        start = time.perf_counter()
        utils.train_epoch(model, train_data, optimizer, args.batch_size, shuffle, l1=args.l1)
        times["in-memory (train.py)"].append(time.perf_counter() - start)
        start = time.perf_counter()
        textbook_epoch(model, loader, optimizer, args.l1)
        times["textbook DataLoader"].append(time.perf_counter() - start)

    print(f"one epoch of {args.dataset}, batch {args.batch_size}, {machine('cpu')}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}:")
    for name, seconds in times.items():
        print(f"  {name:22s} {statistics.median(seconds):6.2f} s   (all: {', '.join(f'{s:.2f}' for s in seconds)})")
    ours, textbook = (statistics.median(s) for s in times.values())
    print(f"  ratio in-memory / textbook: {ours / textbook:.2f}x")

    products, flops = step_products(model, args.batch_size)
    steps = len(train_data[1]) / args.batch_size
    products_seconds = seconds_each(products) * steps
    a, b = torch.randn(LARGE, LARGE), torch.randn(LARGE, LARGE)
    large_rate = 2 * LARGE**3 / seconds_each(lambda: torch.mm(a, b)) / 1e9
    print(f"  its matrix products alone {products_seconds:.2f} s, {100 * products_seconds / ours:.0f} % of the "
          f"in-memory epoch, at {flops * steps / products_seconds / 1e9:.0f} GFLOP/s; one {LARGE} x {LARGE} "
          f"product: {large_rate:.0f} GFLOP/s")


if __name__ == "__main__":
    utils.run(main)
