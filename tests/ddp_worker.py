"""One rank of the two-process DDP test (tests/test_train.py starts it with torchrun).

Usage: torchrun --nproc_per_node 2 tests/ddp_worker.py OUT_DIR. Trains the LayerNorm model and then
the BatchNorm model of the tests on the same data, writing OUT_DIR/layernorm and OUT_DIR/batchnorm.
"""
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from tiny_training import BatchNormNet, LayerNormNet, ddp_config, make_data

from van_edu.train import fit


def main(out: Path) -> None:
    train, test = make_data(512, seed=1), make_data(128, seed=2)
    for name, model_class in (("layernorm", LayerNormNet), ("batchnorm", BatchNormNet)):
        torch.manual_seed(0)
        result = fit(model_class(), train, test, ddp_config(), out_dir=out / name)
        assert not dist.is_initialized(), "fit should destroy the process group it created"
        assert len(result.history) == 2


if __name__ == "__main__":
    main(Path(sys.argv[1]))
