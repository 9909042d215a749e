"""Several processes, one run: the torchrun environment, and DDP / FSDP2 applied from outside the model.

Launch one process per device with ``torchrun``; every process runs the same command::

    torchrun --standalone --nproc_per_node=2 -m scratchllm pretrain --config configs/tiny-cpu.yaml

Across machines, start the same command on every node with a shared rendezvous point instead of
``--standalone``::

    torchrun --nnodes=2 --nproc_per_node=8 --node_rank=$NODE_RANK \\
             --rdzv_backend=c10d --rdzv_endpoint=$MASTER_HOST:29500 --rdzv_id=my-run \\
             -m scratchllm pretrain --config configs/gpt2-small.yaml

(``--nnodes=1:4`` makes the job elastic.) torchrun sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``/``MASTER_PORT``; :func:`setup_distributed` reads them and joins the process group (NCCL on GPUs,
gloo on CPUs). Checkpoints are written by rank 0 and read by every rank, so the run folder must be on a
filesystem all nodes share.

How the work is split:

* **data**: each rank reads its own rows of the global batch (``ShardReader(rank=, world_size=)``).
* **DDP** (default): every rank holds the whole model; gradients are averaged by all-reduce during backward,
  so the update equals one process training on the global batch.
* **FSDP2** (``--train.parallel fsdp``): :func:`torch.distributed.fsdp.fully_shard` on each transformer block and
  then on the root shards parameters, gradients and optimizer state across ranks (ZeRO-3); each block's
  parameters are all-gathered just for its forward and backward. For checkpoints the full state is gathered to
  rank 0 on the CPU (``get_model_state_dict(full_state_dict=True, cpu_offload=True)``).

:func:`parallelize` applies, in torchtitan's order: activation checkpointing per block, ``torch.compile``
(per block under FSDP, whole model otherwise), then FSDP per block and root, or DDP. The model class itself
contains no distributed code.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
from torch import nn

from scratchllm.errors import ScratchLLMError
from scratchllm.train.device import resolve_device


@dataclass
class DistEnv:
    """Where this process sits in the job."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")  # noqa: RUF009 - immutable default
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup_distributed(device: str = "auto") -> DistEnv:
    """Read torchrun's environment and join the process group when ``WORLD_SIZE > 1``."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank, option="train.device")
    if world_size <= 1:
        return DistEnv(device=dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend=backend, timeout=timedelta(minutes=30))
    return DistEnv(rank=rank, local_rank=local_rank, world_size=world_size, device=dev, backend=backend)


def teardown_distributed() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def find_blocks(model: nn.Module) -> nn.ModuleList:
    """The repeated transformer blocks: ``model.blocks``, else the longest ModuleList of one module type."""
    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, (nn.ModuleList, nn.Sequential)):
        return blocks
    candidates = [
        m
        for m in model.modules()
        if isinstance(m, (nn.ModuleList, nn.Sequential)) and len(m) > 0 and len({type(c) for c in m}) == 1
    ]
    if not candidates:
        raise ScratchLLMError(f"parallelize: found no list of repeated blocks in {type(model).__name__}")
    return max(candidates, key=len)


def _checkpointed_forward(block: nn.Module) -> None:
    """Recompute ``block``'s activations in backward instead of storing them (non-reentrant, RNG-preserving)."""
    from torch.utils.checkpoint import checkpoint

    inner = block.forward

    @functools.wraps(inner)
    def forward(*args, **kwargs):
        if not torch.is_grad_enabled():
            return inner(*args, **kwargs)
        return checkpoint(inner, *args, use_reentrant=False, **kwargs)

    block.forward = forward


def parallelize(
    model: nn.Module,
    env: DistEnv,
    *,
    mode: str = "ddp",
    compile: bool = False,
    activation_checkpointing: bool = False,
) -> nn.Module:
    """Prepare ``model`` (already on ``env.device``) for training; returns the module to train.

    Order: activation checkpointing per block, compile, then FSDP2 (per block, then root) or DDP.
    With one process only the first two apply.
    """
    if mode not in ("ddp", "fsdp"):
        raise ScratchLLMError(f"train.parallel: expected ddp or fsdp, got {mode!r}")
    blocks = find_blocks(model)
    if activation_checkpointing:
        for block in blocks:
            _checkpointed_forward(block)
    if compile:
        if mode == "fsdp" and env.distributed:
            for block in blocks:  # in place, per block, so FSDP's hooks sit between compiled regions
                block.compile()
        else:
            # A wrapper, not in place: evaluation and sampling call the eager module inside it
            # (:func:`~scratchllm.train.checkpoint.unwrap_model`) instead of recompiling for eval mode and the
            # KV-cache shapes; checkpoint code strips the wrapper's ``_orig_mod.`` prefix.
            model = torch.compile(model)
    if not env.distributed:
        return model
    if mode == "fsdp":
        from torch.distributed.fsdp import fully_shard

        # Each rank keeps its own slice of its own copy: make the copies equal first, as DDP does when it wraps
        # (weights created after seeding per rank, e.g. LoRA adapters, would otherwise mix across ranks).
        with torch.no_grad():
            for tensor in [*model.parameters(), *model.buffers()]:
                torch.distributed.broadcast(tensor, src=0)
        for block in blocks:
            fully_shard(block)
        fully_shard(model)
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [env.device.index] if env.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


# ---------------------------------------------------------------------------------------------- after FSDP2
def skeleton_of(model: nn.Module) -> nn.Module:
    """A copy of ``model``'s modules whose parameters live on the meta device (no memory), buffers copied.

    Taken before :func:`parallelize` shards the model, it is what :func:`gather_full_model` fills with the
    whole trained model afterwards (FSDP2 changes the module's class in place and has no way back). Tied
    parameters stay tied and ``requires_grad`` is kept.
    """
    import copy

    memo = {
        id(p): nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
        for p in model.parameters()
    }
    return copy.deepcopy(model, memo)


def reshard(model: nn.Module) -> None:
    """Put every FSDP2 module of ``model`` back in its sharded state (a no-op for other models).

    After a forward pass without backward (an evaluation), the root keeps its parameters gathered; a snapshot
    or a copy into the parameters must see the same sharded tensors every time.
    """
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


def gather_full_model(sharded: nn.Module, skeleton: nn.Module, device: torch.device) -> nn.Module:
    """The whole model on every process: ``skeleton`` (:func:`skeleton_of`) filled with the FSDP2 shards.

    Every rank all-gathers the full state dict, so what follows training (evaluation, generation, saving) runs
    on an ordinary module, as under DDP. Memory: one whole model per process, as DDP needs throughout.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    reshard(sharded)
    state = get_model_state_dict(sharded, options=StateDictOptions(full_state_dict=True))
    buffers = dict(skeleton.named_buffers())  # to_empty replaces them with uninitialised memory
    skeleton.to_empty(device=device)
    with torch.no_grad():
        for name, buffer in skeleton.named_buffers():
            buffer.copy_(buffers[name])
    skeleton.load_state_dict(state)  # full_state_dict: plain tensors, not DTensors
    return skeleton
