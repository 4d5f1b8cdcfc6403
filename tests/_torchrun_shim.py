"""Run mace's own ``mace_run_train --distributed`` on CPU ranks, under torchrun or as Slurm starts them.

mace-torch 0.3.16 creates a process group only for cuda/xpu and wraps the model in
``DDP(model, device_ids=[local_rank])``, which gloo on CPU refuses. Two changes before
``mace.cli.run_train.main()`` let it run on CPU: a gloo process group, and a DDP without
``device_ids``. Nothing else of mace or the plugin is touched.

The shim also records, on each rank, the E0s of the model mace trains, so a test can compare
ranks: at the first training forward pass (the first estimate, written before the first epoch),
after every training step (the last one seen: the epoch refits), and after ``main()`` returns
(mace has then reloaded the checkpoint it saves from, refitted by the final refit). They go to
``$MACE_E0_SHIM_DUMP_DIR/rank{RANK}.pt``.

Usage: torchrun --standalone --nproc_per_node=2 tests/_torchrun_shim.py <mace_run_train args>
       --distributed --launcher=torchrun --device=cpu
   or, one process per rank with Slurm's variables set (SLURM_JOB_NODELIST, SLURM_NTASKS,
   SLURM_PROCID, SLURM_LOCALID), mace's default --launcher=slurm:
       python tests/_torchrun_shim.py <mace_run_train args> --distributed --device=cpu
   mace's own slurm_distributed.DistributedEnvironment then sets the rendezvous variables that
   the gloo group reads, as mace does before it would create an nccl group.
"""

import os
import sys

import mace  # noqa: F401  (first: it lets e3nn's torch.load work with torch>=2.6)
import torch
import torch.distributed
from torch.nn.parallel import DistributedDataParallel

DUMP_DIR_VARIABLE = "MACE_E0_SHIM_DUMP_DIR"

_trained_models = []  # the module each DDP wraps: the model mace trains (and, with --swa, evaluates)
_seen = {}


def _e0s(model) -> torch.Tensor:
    return model.atomic_energies_fn.atomic_energies.detach().to("cpu", torch.float64).clone()


class CpuDDP(DistributedDataParallel):
    """mace's ``DDP(model, device_ids=[local_rank])`` for CPU tensors: no device_ids. Its forward
    records the E0s (not a hook on the model: mace pickles the model, hooks included)."""

    def __init__(self, module, *args, device_ids=None, **kwargs):  # pylint: disable=unused-argument
        _trained_models.append(module)
        super().__init__(module, *args, **kwargs)

    def forward(self, *args, **kwargs):
        if self.module.training:  # the plugin's passes and mace's evaluations run in eval mode
            e0s = _e0s(self.module)
            _seen.setdefault("first_training_step", e0s)
            _seen["last_training_step"] = e0s
        return super().forward(*args, **kwargs)


def main() -> None:
    from mace.cli import run_train

    if "SLURM_JOB_NODELIST" in os.environ:
        from mace.tools.slurm_distributed import DistributedEnvironment

        DistributedEnvironment()  # MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK, LOCAL_RANK from Slurm's
    torch.distributed.init_process_group("gloo")
    rank = torch.distributed.get_rank()
    run_train.DDP = CpuDDP
    sys.argv = ["mace_run_train", *sys.argv[1:]]
    run_train.main()  # destroys the process group at its end
    dump_dir = os.environ.get(DUMP_DIR_VARIABLE)
    if dump_dir and _trained_models:
        torch.save({**_seen, "after_main": _e0s(_trained_models[0])},
                   os.path.join(dump_dir, f"rank{rank}.pt"))


if __name__ == "__main__":
    main()
