"""Time one training epoch: train.py's in-memory loop against the textbook DataLoader loop.

The textbook loop (pytorch/examples' mnist) builds every sample with a PIL image and ToTensor inside
the epoch. Both loops train the same model with the same optimizer, batch size and data; they take
turns, and the medians of --repeats epochs each are compared.

    python benchmarks/train_epoch.py --dataset fashion-mnist
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import data  # noqa: E402
import utils  # noqa: E402
from model import MLP  # noqa: E402


def textbook_epoch(model, loader, optimizer, l1):
    model.train()
    for images, labels in loader:
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for weight in model.hidden.parameters():  # the same L1 step as train.py's loop
            weight.grad.add_(weight.detach().sign(), alpha=l1)
        optimizer.step()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=data.DATASETS, default="mnist", help="default: %(default)s")
    parser.add_argument("--data-dir", default="data", help="default: %(default)s")
    parser.add_argument("--batch-size", type=utils.positive_int, default=128, help="default: %(default)s")
    parser.add_argument("--l1", type=float, default=3e-5, help="default: %(default)s")
    parser.add_argument("--repeats", type=utils.positive_int, default=3, help="epochs per loop; default: %(default)s")
    args = parser.parse_args(argv)

    from torchvision import datasets, transforms

    class_name, mean, std = data.DATASETS[args.dataset]
    train_data = data.load_data(args.dataset, args.data_dir, "train", download=False)
    try:
        to_tensor = transforms.Compose([transforms.ToTensor(), transforms.Normalize((mean,), (std,))])
        textbook_set = getattr(datasets, class_name)(args.data_dir, train=True, download=False, transform=to_tensor)
    except RuntimeError as e:
        raise utils.UserError(f"torchvision wants the raw IDX files in {args.data_dir}/{class_name}/raw ({e})")
    loader = torch.utils.data.DataLoader(textbook_set, batch_size=args.batch_size, shuffle=True)

    torch.manual_seed(0)
    model = MLP()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    shuffle = torch.Generator().manual_seed(0)
    times = {"in-memory (train.py)": [], "textbook DataLoader": []}
    for _ in range(args.repeats):
        start = time.perf_counter()
        utils.train_epoch(model, train_data, optimizer, args.batch_size, shuffle, l1=args.l1)
        times["in-memory (train.py)"].append(time.perf_counter() - start)
        start = time.perf_counter()
        textbook_epoch(model, loader, optimizer, args.l1)
        times["textbook DataLoader"].append(time.perf_counter() - start)

    print(f"one epoch of {args.dataset}, batch {args.batch_size}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats}:")
    for name, seconds in times.items():
        print(f"  {name:22s} {statistics.median(seconds):6.2f} s   (all: {', '.join(f'{s:.2f}' for s in seconds)})")
    ours, textbook = (statistics.median(s) for s in times.values())
    print(f"  ratio in-memory / textbook: {ours / textbook:.2f}x")


if __name__ == "__main__":
    utils.run(main)
