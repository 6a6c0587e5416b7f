"""Data parallelism across processes: ``torchrun --nproc-per-node N -m neuralab train ...``.

torchrun starts the processes and sets RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
MASTER_ADDR and MASTER_PORT; ``init`` joins that process group (gloo on CPU, nccl on CUDA).
Several machines work through torchrun's rendezvous (``--nnodes 2 --rdzv-backend c10d
--rdzv-endpoint host:29400``) when every machine sees the run directory (a shared file
system): rank 0 writes it, and every rank reads the checkpoint on ``--resume``.

Every rank draws the same global batch of ``train.batch_size`` examples (the data order is a
function of (seed, step)) and keeps its own contiguous shard of it. After the backward pass,
``all_reduce_`` sums the ranks' gradients in one flat buffer. Each rank's loss is weighted by
the share of the global batch it saw, so the sum is the gradient of the global batch's mean
loss: the step is the one a single process takes on the whole batch, whatever the number of
processes (up to float rounding) — and whatever the number of micro-batches of gradient
accumulation, which are weighted the same way. That holds for models whose output for one
example does not depend on the others: BatchNorm does, so under several processes it becomes
SyncBatchNorm on GPUs and is refused on CPUs (``neuralab.train.trainer``); under gradient
accumulation its statistics are those of each micro-batch.

Why one all-reduce after the backward and not ``DistributedDataParallel``'s hooks: a task
may run several forward passes per step (PGD's attack and TRADES' two terms) or call into a
model's parts (a self-supervised head), which DDP's one-forward-one-backward bookkeeping does
not allow; one flat all-reduce per step is exact for all of them, and it also carries the
step's loss statistics and Ctrl-C flag, so every rank takes the same decisions.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from neuralab.errors import UserError


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of a data-parallel run (one rank when alone)."""

    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        """Rank 0 logs, validates, and writes the run directory and its checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def launched() -> bool:
    """Whether torchrun started this process (it sets these variables)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def local_size() -> int:
    """How many ranks share this machine (torchrun's LOCAL_WORLD_SIZE; 1 when alone)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def init() -> World:
    """Join torchrun's process group (once per process); a world of one without torchrun."""
    if not launched():
        return World()
    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo")
    return World(dist.get_rank(), dist.get_world_size())


def shard(x: Tensor, y: Tensor, world: World) -> tuple[Tensor, Tensor]:
    """This rank's contiguous share of the global batch (x, y)."""
    if not world.distributed:
        return x, y
    if len(x) % world.size:
        raise UserError(
            f"train.batch_size={len(x)} does not split evenly over {world.size} processes; "
            f"use a multiple of {world.size}"
        )
    n = len(x) // world.size
    rows = slice(world.rank * n, (world.rank + 1) * n)
    return x[rows], y[rows]


def all_reduce_(params: list[torch.nn.Parameter], extra: list[float], world: World) -> list[float]:
    """Sum the gradients of ``params`` over the ranks, in place, and ``extra`` numbers with
    them (one collective call). Parameters without a gradient are left out: every rank runs
    the same model and task code, so they lack it on every rank."""
    if not world.distributed:
        return extra
    grads = [p.grad for p in params if p.grad is not None]
    numbers = torch.tensor(extra, dtype=grads[0].dtype if grads else torch.float32)
    flat = _flatten_dense_tensors(grads) if grads else numbers.new_zeros(0)
    buffer = torch.cat([flat, numbers.to(flat.device)])  # float32 counts are exact to 2^24
    dist.all_reduce(buffer)
    for grad, new in zip(
        grads, _unflatten_dense_tensors(buffer[: flat.numel()], grads), strict=True
    ):
        grad.copy_(new)
    return buffer[flat.numel() :].tolist()


def broadcast_flags(flags: list[bool], world: World) -> list[bool]:
    """Rank 0's ``flags`` on every rank."""
    if not world.distributed:
        return flags
    t = torch.tensor(flags, dtype=torch.uint8)
    dist.broadcast(t, src=0)
    return [bool(v) for v in t.tolist()]


def from_main(make: Callable[[], object], world: World) -> str:
    """``str(make())``, computed on rank 0 only (e.g. creating the run directory), on every
    rank; a UserError that ``make`` raises is raised on every rank."""
    if not world.distributed:
        return str(make())
    box: list[str | None] = [None, None]  # (result, error message)
    if world.main:
        try:
            box[0] = str(make())
        except UserError as err:
            box[1] = str(err)
    dist.broadcast_object_list(box, src=0)  # our own ranks' strings, never a user's file
    if box[1] is not None:
        raise UserError(box[1])
    return str(box[0])


def finish() -> None:
    """Leave the process group, if this process joined one, once every rank is done: rank 0
    may still be testing when the others finish, and a rank that tears its group down (or
    exits) while another still uses it can abort in gloo's threads. Call it on success only;
    after an error torchrun stops the other ranks."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
