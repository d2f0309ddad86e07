"""Run in parallel (the README's `pytest -n auto`), the workers share the cores: each in-process torch gets
cores / workers threads, or the workers' thread pools oversubscribe the machine and every test slows."""
import os

import torch

_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1:
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // _workers))
