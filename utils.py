"""What every script shares: one-line errors, flags of numbers, the device, evaluation and an epoch of training."""
import argparse
import math
import signal
import sys
import threading
import warnings

import torch
import torch.nn.functional as F
from tqdm import tqdm


class UserError(Exception):
    """A wrong flag, a missing file or bad data: reported as one line on stderr, never a traceback."""


class Terminated(BaseException):
    """SIGTERM, as schedulers and `timeout` stop a job: unwound like Ctrl-C, so temporary files go."""


def raise_terminated(signum, frame):
    raise Terminated


def run(main):
    """Run a script's main(), turning a UserError, Ctrl-C or SIGTERM into one line on stderr and a
    non-zero exit.

    Library warnings, and errors in libraries' own threads (TensorBoard writes from one; a failure
    there comes back to main() as an error), are held until main() ends well, so that an error is one
    line.
    """
    on_sigterm = signal.signal(signal.SIGTERM, raise_terminated)
    thread_errors, excepthook = [], threading.excepthook
    threading.excepthook = thread_errors.append
    try:
        with warnings.catch_warnings(record=True) as caught:
            main()
        for warning in caught:
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
        for error in thread_errors:
            excepthook(error)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except (KeyboardInterrupt, Terminated) as e:
        # Every output is written whole or not at all (write_atomic), so what existed before is intact.
        print("interrupted: files from earlier runs are left as they were", file=sys.stderr)
        sys.exit(130 if isinstance(e, KeyboardInterrupt) else 128 + signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, on_sigterm)
        threading.excepthook = excepthook


# ---------------------------------------------------------------------------------------------------
# Command line


def positive_int(text):
    return parse_number(text, int, lambda value: value > 0, "a positive whole number")


def non_negative_int(text):
    return parse_number(text, int, lambda value: value >= 0, "a whole number >= 0")


def positive_float(text):
    return parse_number(text, float, lambda value: 0 < value < math.inf, "a positive number")


def non_negative_float(text):
    return parse_number(text, float, lambda value: 0 <= value < math.inf, "a number >= 0")


def percent_below_100(text):
    return parse_number(text, float, lambda value: 0 <= value < 100, "a percentage from 0 to below 100")


def positive_ints(text):
    """A comma-separated list of positive whole numbers, each once, in the order given."""
    values = [parse_number(item.strip(), int, lambda value: value > 0, "positive whole numbers, comma-separated")
              for item in text.split(",")]
    return list(dict.fromkeys(values))


def folder_name(text):
    """One folder's name (eval.py --name): not empty, without a slash, not starting with a dot."""
    if not text or text.startswith(".") or "/" in text or "\\" in text:
        raise argparse.ArgumentTypeError(f"expected a folder's name, without / and not starting with '.', got {text!r}")
    return text


def parse_number(text, kind, is_valid, expected):
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not is_valid(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def pick_device(name):
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available here; use --device cpu")
    return name


# ---------------------------------------------------------------------------------------------------
# Training and evaluation


@torch.no_grad()
def evaluate(model, data, batch_size=2000):
    """Test accuracy of `model` on data = (images, labels), in percent."""
    images, labels = data
    model.eval()
    correct = sum((model(images[i:i + batch_size]).argmax(1) == labels[i:i + batch_size]).sum()
                  for i in range(0, len(labels), batch_size))
    return 100 * int(correct) / len(labels)


def sgd(model, lr, steps, weight_decay=0.0):
    """SGD with Nesterov momentum 0.9, its learning rate annealed from lr to 0 over `steps` on a cosine. Fused:
    one pass over each parameter a step where the loop made four. On the MLP's layers it gives the loop's weights
    to the last bit; on a tensor whose size is not a whole number of the CPU's vectors (a retrained net of live
    units), the few elements past the last whole vector may round differently in the last bit."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay,
                                fused=True)
    return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)


def adam(parameters, lr, steps, weight_decay=0.0):
    """Adam on `parameters` (or parameter groups with rates of their own), its learning rates annealed from lr
    (or the group's) to 0 over `steps` on a cosine. Fused: one pass over each parameter a step instead of a
    dozen, which matters where, as in vd, the optimiser holds twice the net's weights."""
    optimizer = torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay, fused=True)
    return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)


def train_epoch(model, data, optimizer, batch_size, generator, scheduler=None, l1=0.0, desc="train", loss_fn=None,
                after_step=None):
    """One pass over data = (images, labels) in an order drawn from `generator`; the mean loss.

    l1 adds l1 * sum(|w|) over the hidden layers to the loss (as its gradient, l1 * sign(w), which
    costs less than differentiating the sum): it pushes the weights the net does not need to zero.
    loss_fn(logits, batch), given the indices of the batch, replaces the cross-entropy with the labels;
    after_step(), where given, runs after each step of the optimizer (as a pruning schedule's).
    """
    images, labels = data
    model.train()
    order = torch.randperm(len(labels), generator=generator).to(images.device)
    total_loss = torch.zeros((), device=images.device)
    signs = {}  # by parameter, read at each step: gmp swaps its layers' parameters once its masks are final
    # disable=None: a bar on a terminal, silence in logs and CI.
    for start in tqdm(range(0, len(labels), batch_size), desc=desc, unit="batch", leave=False, disable=None):
        batch = order[start:start + batch_size]
        logits = model(images[batch])
        loss = loss_fn(logits, batch) if loss_fn else F.cross_entropy(logits, labels[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if l1:
            for weight in model.hidden.parameters():  # weight_orig once a layer is pruned
                sign = signs.get(weight)
                if sign is None:
                    sign = signs[weight] = torch.empty_like(weight)
                weight.grad.add_(torch.sign(weight.detach(), out=sign), alpha=l1)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if after_step is not None:
            after_step()
        total_loss += loss.detach() * len(batch)
    mean_loss = total_loss.item() / len(labels)
    if not math.isfinite(mean_loss):
        raise UserError(f"the training loss became {mean_loss} ({desc}): try a smaller --lr")
    return mean_loss
