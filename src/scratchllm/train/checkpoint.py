"""Checkpoints that survive crashes and resume the exact same run.

A checkpoint is a folder ``<root>/step-N/`` (N optimizer steps done) holding::

    model.safetensors   weights (tied aliases stored once)      config.json     model shape
    optimizer.safetensors   optimizer tensors (moments, step)   optimizer.json  param groups and scalars
    trainer.json        step, tokens seen, schedule, data-reader position, train config, tokenizer, val loss
    rng.json            python / numpy / torch CPU / CUDA generator states, one entry per process
    COMPLETE            written last: a folder without it is ignored

Nothing is pickled. Writing is crash-safe: every file goes into a hidden temporary folder and is fsynced, the
folder is renamed to ``step-N`` and only then is the marker written (and fsynced). A crash at any moment leaves
the previous checkpoints untouched and at most one unmarked folder, which :func:`latest_checkpoint` skips.
Saving a step whose complete folder exists already (a rerun from an earlier checkpoint) first moves the old one
aside to ``.old-step-N``; only once the new one is marked complete is the old one deleted, and until then
:func:`complete_checkpoints` counts the hidden copy as ``step-N``.

With several processes, model and optimizer states are gathered to rank 0 with
``torch.distributed.checkpoint.state_dict`` (``full_state_dict=True, cpu_offload=True``), which is a no-op for
plain and DDP models and an all-gather of the shards for FSDP2; rank 0 alone writes. On resume every process
reads the same files (a filesystem shared by all nodes is assumed) and loads the full state, which FSDP2 shards.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from scratchllm.atomic import fsync_path
from scratchllm.errors import ScratchLLMError
from scratchllm.utf8 import read_json

MARKER = "COMPLETE"
_STEP_DIR = re.compile(r"^step-(\d+)$")
_OLD_STEP_DIR = re.compile(r"^\.old-step-(\d+)$")

Log = Callable[[str], None]


# ---------------------------------------------------------------------------------------------- small helpers
def _write_json(path: Path, data: Any) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())


def _write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    save_file(
        {k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path), metadata={"format": "pt"}
    )
    fsync_path(path)


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _rank() -> int:
    return torch.distributed.get_rank() if _distributed() else 0


def _world_size() -> int:
    return torch.distributed.get_world_size() if _distributed() else 1


def unwrap_model(model: nn.Module) -> nn.Module:
    """The user's module inside DDP (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def tied_aliases(model: nn.Module) -> set[str]:
    """Parameter names that are a second name for an earlier parameter (e.g. a tied LM head)."""
    model = unwrap_model(model)
    every = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    unique = {name for name, _ in model.named_parameters()}
    return every - unique


def _gather_json(obj: Any) -> list[Any]:
    """Collect one JSON-serialisable object from every process (on all of them), without pickle."""
    if not _distributed():
        return [obj]
    payload = torch.tensor(list(json.dumps(obj).encode("utf-8")), dtype=torch.uint8)
    backend_device = (
        torch.device("cuda", torch.cuda.current_device()) if _uses_cuda() else torch.device("cpu")
    )
    size = torch.tensor([payload.numel()], dtype=torch.int64, device=backend_device)
    world = torch.distributed.get_world_size()
    sizes = [torch.zeros_like(size) for _ in range(world)]
    torch.distributed.all_gather(sizes, size)
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros(longest, dtype=torch.uint8, device=backend_device)
    padded[: payload.numel()] = payload.to(backend_device)
    chunks = [torch.zeros_like(padded) for _ in range(world)]
    torch.distributed.all_gather(chunks, padded)
    return [
        json.loads(bytes(c[: int(s.item())].cpu().tolist()).decode("utf-8")) for c, s in zip(chunks, sizes)
    ]


def _uses_cuda() -> bool:
    return _distributed() and torch.distributed.get_backend() == "nccl"


# ---------------------------------------------------------------------------------------------- RNG state
def capture_rng_state() -> dict[str, Any]:
    """Every random generator training touches, as JSON (python ``random``, numpy, torch CPU and CUDA)."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode("ascii"),
        "cuda": [],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [
            base64.b64encode(s.numpy().tobytes()).decode("ascii") for s in torch.cuda.get_rng_state_all()
        ]
    return state


def restore_rng_state(state: dict[str, Any], *, log: Log | None = None) -> None:
    """Inverse of :func:`capture_rng_state`.

    CUDA generators are restored only onto the same number of GPUs; otherwise they keep their seeds and ``log``
    (default: stderr) says so, because the run then continues with other dropout masks than it would have.
    """
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))

    def _bytes_tensor(text: str) -> torch.Tensor:
        return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)

    torch.set_rng_state(_bytes_tensor(state["torch"]))
    saved = len(state.get("cuda") or [])
    here = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if saved and saved == here:
        torch.cuda.set_rng_state_all([_bytes_tensor(s) for s in state["cuda"]])
    elif saved or (here and torch.cuda.is_initialized()):
        (log or _stderr)(
            f"RNG: the checkpoint holds CUDA generator states for {saved} GPU(s), this process sees {here}; "
            "CUDA generators keep their current seeds (dropout will differ from an uninterrupted run)"
        )


def _stderr(message: str) -> None:
    print(f"scratchllm: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- optimizer
def _split_optimizer_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_name, param_state in state["state"].items():
        for key, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{param_name}::{key}"] = value
            else:
                scalars.setdefault(str(param_name), {})[key] = value
    groups = []
    for group in state["param_groups"]:
        groups.append({k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items()})
    return tensors, {"param_groups": groups, "scalars": scalars}


def _join_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[str, dict[str, Any]] = {}
    for flat, value in tensors.items():
        param_name, key = flat.rsplit("::", 1)
        state.setdefault(param_name, {})[key] = value
    for param_name, values in meta["scalars"].items():
        state.setdefault(param_name, {}).update(values)
    groups = []
    for group in meta["param_groups"]:
        groups.append({k: (tuple(v) if k == "betas" else v) for k, v in group.items()})
    return {"state": state, "param_groups": groups}


# ---------------------------------------------------------------------------------------------- finding
def step_of(path: Path) -> int | None:
    match = _STEP_DIR.match(path.name) or _OLD_STEP_DIR.match(path.name)
    return int(match.group(1)) if match else None


def complete_checkpoints(root: Path) -> list[Path]:
    """Complete ``step-N`` folders under ``root``, oldest first.

    A complete ``.old-step-N`` (a replaced checkpoint whose replacement a crash left unfinished) stands in for
    a ``step-N`` that is missing or unmarked.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    found: dict[int, Path] = {}
    for path in root.iterdir():
        step = step_of(path)
        if step is not None and (path / MARKER).is_file() and (step not in found or path.name.startswith("step-")):
            found[step] = path
    return [found[step] for step in sorted(found)]


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint, ignoring folders a crash left without the marker."""
    found = complete_checkpoints(root)
    return found[-1] if found else None


def read_trainer_json(path: Path) -> dict[str, Any]:
    return read_json(Path(path) / "trainer.json")


# ---------------------------------------------------------------------------------------------- save
def _full_states(model: nn.Module, optimizer: torch.optim.Optimizer | None) -> tuple[dict, dict | None]:
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_state = get_model_state_dict(model, options=options)
    optim_state = (
        get_optimizer_state_dict(model, optimizer, options=options) if optimizer is not None else None
    )
    return model_state, optim_state


def save_checkpoint(
    root: Path,
    step: int,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    trainer_state: dict[str, Any],
    model_config: dict[str, Any] | None = None,
    keep_last: int | None = None,
) -> Path | None:
    """Write ``root/step-{step}`` atomically (see module docstring); return it on rank 0, ``None`` elsewhere.

    Every process must call this (FSDP gathers shards; RNG states are collected from all ranks).
    ``trainer_state`` is JSON data (counters, data position, configs, ``val_loss`` for keeping the best).
    Raises :class:`ScratchLLMError` and writes nothing if a weight is NaN or infinite.
    """
    root = Path(root)
    model_state, optim_state = _full_states(model, optimizer)
    rng_states = _gather_json(capture_rng_state())
    if _rank() != 0:
        if _distributed():
            torch.distributed.barrier()
        return None
    aliases = tied_aliases(model)
    model_state = {k: v for k, v in model_state.items() if k not in aliases}
    for name, tensor in model_state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            if _distributed():
                torch.distributed.barrier()
            raise ScratchLLMError(f"checkpoint step-{step}: weight {name} holds NaN/inf; refusing to save it")

    root.mkdir(parents=True, exist_ok=True)
    _clean_leftovers(root)
    tmp = root / f".tmp-step-{step}-{os.getpid()}"
    tmp.mkdir()
    try:
        _write_tensors(tmp / "model.safetensors", model_state)
        if model_config is not None:
            _write_json(tmp / "config.json", model_config)
        if optim_state is not None:
            tensors, meta = _split_optimizer_state(optim_state)
            _write_tensors(tmp / "optimizer.safetensors", tensors)
            _write_json(tmp / "optimizer.json", meta)
        _write_json(tmp / "trainer.json", {**trainer_state, "step": step})
        _write_json(tmp / "rng.json", rng_states)
        fsync_path(tmp)
    except (OSError, SafetensorError) as err:  # a full disk, most often: free what we wrote, keep what was there
        written = sum(f.stat().st_size for f in tmp.iterdir())
        shutil.rmtree(tmp, ignore_errors=True)
        if _distributed():
            torch.distributed.barrier()
        raise ScratchLLMError(
            f"checkpoint step-{step}: writing it in {root} failed after {written / 2**20:,.0f} MiB ({err}); "
            "it was removed, and the complete checkpoints there are untouched "
            "(free some space, then run again with --resume)"
        ) from err
    final = _publish(tmp, root, step)
    if keep_last is not None:
        prune_checkpoints(root, keep_last)
    if _distributed():
        torch.distributed.barrier()
    return final


def _clean_leftovers(root: Path) -> None:
    """Delete what a crash left: temporary folders, and old copies whose replacement is complete."""
    for stale in root.glob(".tmp-step-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for old in root.glob(".old-step-*"):
        replacement = root / f"step-{step_of(old)}"
        if not (old / MARKER).is_file() or (replacement / MARKER).is_file():
            shutil.rmtree(old, ignore_errors=True)


def _publish(tmp: Path, root: Path, step: int) -> Path:
    """Rename the written folder ``tmp`` to ``root/step-N`` and mark it complete, never losing a complete one."""
    final = root / f"step-{step}"
    old = root / f".old-step-{step}"
    if (final / MARKER).is_file():  # a rerun after resuming from an earlier step: keep it until we are done
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    elif final.exists():  # an unmarked folder from a crash: never counted, safe to drop
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_path(root)
    with open(final / MARKER, "w", encoding="utf-8") as fh:
        fh.write(f"step {step}\n")
        fh.flush()
        os.fsync(fh.fileno())
    fsync_path(final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def prune_checkpoints(root: Path, keep_last: int) -> list[Path]:
    """Delete complete checkpoints except the newest ``keep_last`` and the best by ``val_loss``."""
    found = complete_checkpoints(root)
    keep = set(found[-keep_last:])
    scored = []
    for path in found:
        val = read_trainer_json(path).get("val_loss")
        if val is not None:
            scored.append((float(val), -(step_of(path) or 0), path))
    if scored:
        keep.add(min(scored)[2])
    removed = []
    for path in found:
        if path not in keep:
            (path / MARKER).unlink()  # first un-mark, so a crash mid-delete leaves an ignored folder
            shutil.rmtree(path)
            removed.append(path)
    return removed


# ---------------------------------------------------------------------------------------------- load
def load_checkpoint(
    path: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    restore_rng: bool = True,
    log: Log | None = None,
) -> dict[str, Any]:
    """Load weights (and optimizer, RNG) from ``path`` into the live objects; return ``trainer.json``.

    Every process calls this; under FSDP2 each keeps only its shard of the full state read from disk. RNG states
    saved by another number of processes cannot all be restored: each rank then takes the saved rank's state
    of the same number when there is one, else rank 0's, and ``log`` (default: stderr, rank 0 only) says so.
    """
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    path = Path(path)
    if not (path / MARKER).is_file():
        raise ScratchLLMError(f"{path}: not a complete checkpoint (no {MARKER} marker)")
    try:
        model_state = load_file(str(path / "model.safetensors"))
    except Exception as exc:
        raise ScratchLLMError(f"{path}/model.safetensors: unreadable ({exc})") from None
    aliases = tied_aliases(model)
    expected = set(unwrap_model(model).state_dict().keys())
    missing = sorted(expected - set(model_state) - aliases)
    unexpected = sorted(set(model_state) - expected)
    if missing or unexpected:
        raise ScratchLLMError(
            f"{path}/model.safetensors: does not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    options = StateDictOptions(full_state_dict=True, strict=False)
    set_model_state_dict(model, model_state, options=options)
    if optimizer is not None:
        meta = read_json(path / "optimizer.json")
        tensors = load_file(str(path / "optimizer.safetensors"))
        set_optimizer_state_dict(model, optimizer, _join_optimizer_state(tensors, meta), options=options)
    if restore_rng:
        states = read_json(path / "rng.json")
        rank, world = _rank(), _world_size()
        say = (log or _stderr) if rank == 0 else (lambda _message: None)
        if len(states) != world:
            say(
                f"RNG: {path} was saved by {len(states)} process(es), this run has {world}; each process takes "
                "the saved state of its rank where there is one, else rank 0's (dropout and sampling will "
                "differ from an uninterrupted run)"
            )
        restore_rng_state(states[rank] if rank < len(states) else states[0], log=say)
    return read_trainer_json(path)
