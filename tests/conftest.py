"""Test-wide setup: Triton runs in its interpreter on machines without CUDA (set before any import
of the kernel module), and tests stay on one intra-op thread so pytest-xdist workers share cores."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
torch.set_num_threads(1)
