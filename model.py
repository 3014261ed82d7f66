"""The network under study: a fully connected ReLU net, 784-1000-1000-500-200-10, without biases; or any other
hidden sizes (train.py --hidden 300,100: the papers' LeNet-300-100)."""
import torch
from torch import nn

HIDDEN = (1000, 1000, 500, 200)  # the hidden layers' units
SIZES = (784, *HIDDEN, 10)  # input pixels, the hidden layers, ten class logits
MAX_UNITS = 32767  # a hidden layer's units at most: a pruned net's file gives each column index in 16 bits
MAX_WEIGHTS = 100_000_000  # 400 MB of float32: what a file may ask the loader to allocate


def sizes(hidden=HIDDEN):
    """The MLP's layer sizes, input to logits, for `hidden` units in each hidden layer."""
    return (SIZES[0], *hidden, SIZES[-1])


def sizes_of(model):
    """The layer sizes of an MLP, input to logits."""
    return (model.layers[0].in_features, *(layer.out_features for layer in model.layers))


def hidden_error(hidden):
    """Why `hidden` cannot be the MLP's hidden layers, or "" where it can."""
    if not hidden or not all(type(units) is int and 0 < units <= MAX_UNITS for units in hidden):
        return f"hidden layers of 1 to {MAX_UNITS} units each, at least one layer"
    every = sizes(hidden)
    if sum(a * b for a, b in zip(every, every[1:])) > MAX_WEIGHTS:
        return f"at most {MAX_WEIGHTS:,} weights in all"
    return ""


class MLP(nn.Module):
    # No biases: the weight matrices are then every parameter, so pruning them prunes the whole net.
    def __init__(self, sizes=SIZES):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Linear(n_in, n_out, bias=False) for n_in, n_out in zip(sizes, sizes[1:])
        )

    @property
    def hidden(self):
        """The layers followed by a ReLU: the ones pruning touches. The last layer gives the logits."""
        return self.layers[:-1]

    def forward(self, x):
        x = x.flatten(1)
        for layer in self.hidden:
            x = torch.relu(layer(x))
        return self.layers[-1](x)
