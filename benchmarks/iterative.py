"""Does pruning in steps beat one-shot pruning plus fine-tuning, for the same training cost?

For each target, one-shot prunes straight to its last k and fine-tunes for as many epochs as there
are steps; iterative prunes to each k of the steps in turn, fine-tuning one epoch after each. Both use
prune.py's prune() and retrain(), at eval.py's default fine-tuning learning rate.

    python benchmarks/iterative.py --dataset fashion-mnist      # a few minutes on 2 CPU cores
"""
import argparse
import sys
from pathlib import Path

from torch.nn.utils import prune as torch_prune

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import data  # noqa: E402
import checkpoints  # noqa: E402
import utils  # noqa: E402
from prune import prune, sparsity  # noqa: E402
from retrain import retrain  # noqa: E402

TARGETS = [("weight", (90, 97, 99)), ("unit", (70, 85, 90)), ("unit", (80, 90, 95))]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="model.pt", help="default: %(default)s")
    parser.add_argument("--dataset", choices=data.DATASETS, default="mnist", help="default: %(default)s")
    parser.add_argument("--data-dir", default="data", help="default: %(default)s")
    parser.add_argument("--lr", type=utils.positive_float, default=0.01, help="default: %(default)s")
    args = parser.parse_args(argv)

    model, checkpoint = checkpoints.load(args.checkpoint)
    train_data = data.load_data(args.dataset, args.data_dir, "train", download=False)
    test_data = data.load_data(args.dataset, args.data_dir, "test", download=False)
    batch_size = checkpoint["config"].get("batch_size", 128)

    print("| method | k | one-shot + fine-tuning | steps, one epoch each | iterative |")
    print("|---|---:|---:|---|---:|")
    for method, steps in TARGETS:
        one_shot = prune(model, method, steps[-1])
        retrain(one_shot, train_data, len(steps), args.lr, batch_size, seed=0)
        stepped = model
        for k in steps:
            for layer in stepped.hidden:  # keep the last step's mask: its zeros are the smallest weights now
                if hasattr(layer, "weight_mask"):
                    torch_prune.remove(layer, "weight")
            stepped = prune(stepped, method, k)
            retrain(stepped, train_data, 1, args.lr, batch_size, seed=0)
        assert sparsity(stepped)["sparsity"] == sparsity(one_shot)["sparsity"]
        print(f"| {method} | {steps[-1]} | {utils.evaluate(one_shot, test_data):.2f} | "
              f"{' → '.join(map(str, steps))} | {utils.evaluate(stepped, test_data):.2f} |", flush=True)


if __name__ == "__main__":
    utils.run(main)
