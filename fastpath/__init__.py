"""The forward pass of a pruned net, by every path: dense, torch.sparse, compacted, and the C kernels.

    compact.py   the pruned net without its dead units, as a smaller dense net with the same outputs
    plan.py      the layouts the C kernels take, built once per net, and the call into them
    paths.py     each path as forward(layers, x), and fastest_path, the one a machine runs best
"""
