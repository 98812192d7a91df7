"""Several processes, one run: which share each process takes and how the shares meet.

`bench run` started by `accelerate launch`, `torchrun` or `bench run --num-processes N`
(which calls accelerate's launcher) runs once per process; the launcher's environment
(WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR/PORT) says how many there are. accelerate's
``PartialState`` joins them into one process group: NCCL between GPUs, gloo between CPU
processes (and, beside NCCL, a gloo group for the small host-side exchanges).

- Training is data-parallel: every process's loader yields its own contiguous part of
  each batch one process would draw (bench.data.pipeline), and after each backward the
  gradients of all processes are summed, each weighted by its share of the batch's
  readable images (one all-reduce of the flattened gradients per step), so every process
  steps the same optimiser with the gradient of the whole batch.
- Evaluation is sharded by whole batches (batch i on process i mod N), so every image is
  predicted once, in the very batch a single process would use; the scores meet on
  process 0, which alone writes the run's files.

A single process (the default) has ``SINGLE``: its host-side exchanges return at once,
and the training loop never asks it to average gradients.
Import-light: torch loads inside the methods that need it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from bench.errors import BenchError


def world_from_env() -> int:
    """How many processes the launcher started (1 outside a launcher)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


@dataclass
class Processes:
    """This process's place among the run's processes, and the collectives they share."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None
    #: The process group for host-side exchanges (objects, counts); None: the default one.
    host_group: Any = None

    @property
    def main(self) -> bool:
        """Process 0: the one that writes the run's files and logs."""
        return self.rank == 0

    @property
    def several(self) -> bool:
        return self.world > 1

    # --- host-side exchanges (picklable objects) --------------------------------------
    def barrier(self) -> None:
        if self.several:
            import torch.distributed as dist

            dist.barrier(group=self.host_group)

    def broadcast(self, obj: Any) -> Any:
        """Process 0's ``obj``, on every process."""
        if not self.several:
            return obj
        import torch.distributed as dist

        box = [obj if self.main else None]
        dist.broadcast_object_list(box, src=0, group=self.host_group)
        return box[0]

    def all_gather(self, obj: Any) -> list[Any]:
        """Every process's ``obj``, in rank order, on every process."""
        if not self.several:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj, group=self.host_group)
        return out

    # --- training -----------------------------------------------------------------------
    def average_gradients(self, params: list[Any], count: int, loss: Any) -> Any:
        """Make every process's gradients the whole batch's; returns the batch's mean loss.

        ``count``: readable images in this process's part; ``loss``: its mean loss (None
        when the part is empty). Each process's gradient is weighted by count / total, so
        the sum is the gradient of the mean over the whole batch, as one process computes
        it. A parameter no process has a gradient for keeps none (the optimiser skips it,
        as it would in one process). Returns None when no process had a readable image
        (the step is then skipped, as one process skips such a batch).
        """
        import torch
        import torch.distributed as dist

        have = [p.grad is not None for p in params]
        meta = torch.tensor([float(count), *(float(h) for h in have)], dtype=torch.float64)
        dist.all_reduce(meta, group=self.host_group)  # on the host: no device sync
        total = float(meta[0])
        if total == 0:
            for p in params:
                p.grad = None
            return None
        used = [p for p, n in zip(params, meta[1:].tolist(), strict=True) if n > 0]
        device = used[0].device if used else (loss.device if loss is not None else "cpu")
        pieces = [
            (
                p.grad.detach().float()
                if p.grad is not None
                else torch.zeros_like(p, dtype=torch.float32)
            )
            .reshape(-1)
            .to(device)
            for p in used
        ]
        own = loss.detach().float().reshape(1).to(device) if loss is not None else None
        pieces.append(own if own is not None else torch.zeros(1, device=device))
        flat = torch.cat(pieces) * (count / total)
        dist.all_reduce(flat)  # the default group: NCCL between GPUs, gloo on CPUs
        offset = 0
        for p in used:
            n = p.numel()
            p.grad = flat[offset : offset + n].view_as(p).to(p.dtype)
            offset += n
        for p, flag in zip(params, meta[1:].tolist(), strict=True):
            if flag == 0:
                p.grad = None
        return flat[-1]

    def close(self) -> None:
        """Leave the process group (the launcher's processes end right after)."""
        if self.several:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.barrier(group=self.host_group)
                dist.destroy_process_group()


SINGLE = Processes()
_STARTED: dict[str, tuple[Processes, str]] = {}


def start(device: str) -> tuple[Processes, str]:
    """(this process's Processes, its device) from the launcher's environment.

    ``device`` as given to --device: with several processes each takes one GPU
    (cuda:LOCAL_RANK) or the CPU; ``cuda:N`` would put them all on one GPU and is refused.
    """
    world = world_from_env()
    if world <= 1:
        return SINGLE, device
    if device in _STARTED:  # one process group per process: several seeds share it
        return _STARTED[device]
    import torch

    if device == "mps":
        raise BenchError("several processes (WORLD_SIZE > 1) cannot share --device mps")
    if device.startswith("cuda:"):
        raise BenchError(
            f"--device {device} with {world} processes would put all of them on one GPU: "
            "give --device cuda (each process takes cuda:LOCAL_RANK) or --device cpu"
        )
    cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    if not cpu and not torch.cuda.is_available():
        raise BenchError(f"--device {device} asked for, but no CUDA device is available")
    from accelerate import PartialState

    state = PartialState(cpu=cpu)
    if state.num_processes != world:
        raise BenchError(
            f"the launcher says {world} processes but accelerate joined {state.num_processes}"
        )
    import torch.distributed as dist

    host = None if state.backend == "gloo" else dist.new_group(backend="gloo")
    processes = Processes(
        rank=state.process_index,
        world=state.num_processes,
        local_rank=state.local_process_index,
        backend=state.backend,
        host_group=host,
    )
    if not cpu:
        torch.cuda.set_device(state.local_process_index)
    _STARTED[device] = processes, "cpu" if cpu else f"cuda:{state.local_process_index}"
    return _STARTED[device]


def close_all() -> None:
    """Leave the process group this process joined, if any (the end of `bench run`)."""
    for processes, _ in _STARTED.values():
        processes.close()
    _STARTED.clear()


def merge_read_logs(processes: Processes, read_log: Any) -> None:
    """Every process's unreadable files in every process's ReadLog (each saw its share)."""
    if processes.several:
        for unreadable in processes.all_gather(dict(read_log.unreadable)):
            read_log.add(list(unreadable.items()))


def free_port() -> int:
    """A TCP port free on this machine now, for a launcher started here."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch_command(num_processes: int, device: str, argv: list[str]) -> list[str]:
    """The accelerate launcher command that runs ``bench <argv>`` as ``num_processes`` processes.

    accelerate's multi-process launcher (torch's elastic launch underneath) starts them on
    this machine; without ``--cpu`` even on the CPU, since accelerate's CPU launcher starts
    several processes only through MPI. Each process then joins with gloo (CPU) or NCCL.
    """
    import sys

    if device.startswith("cuda"):
        import torch

        available = torch.cuda.device_count()
        if num_processes > available:
            raise BenchError(
                f"--num-processes {num_processes} with --device {device}: this machine has "
                f"{available} CUDA device(s)"
            )
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        str(num_processes),
        "--num_machines",
        "1",
        "--main_process_port",
        str(free_port()),
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "bench.cli",
        *argv,
    ]
