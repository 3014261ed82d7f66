"""The C kernels and the one module that builds and loads them (build.py), and the checks every tensor passes
before it reaches them (check.py).

    csr_kernel.c      the forward pass of a pruned net on a batch, samples in a vector's lanes (fastpath/plan.py)
    column_kernel.c   the forward pass of one image, column by column, skipping zero activations (fastpath/plan.py)
    masked_kernel.c   a masked layer's three products over its kept weights (sparse_training/masked.py)
    vd_kernel.c       variational dropout's σ² and KL with their gradients (sparse_training/vd.py)
    l0_kernel.c       L0's gates per weight and their gradients (sparse_training/l0.py)
"""
