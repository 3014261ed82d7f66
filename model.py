"""The network under study: a fully connected ReLU net, 784-1000-1000-500-200-10, without biases."""
import torch
from torch import nn

SIZES = (784, 1000, 1000, 500, 200, 10)  # input pixels, four hidden layers, ten class logits


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
