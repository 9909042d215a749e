"""GPU pretraining MFU: gpt2-small, bf16 autocast, ``torch.compile``, fused (flash) attention, through our Trainer.

The one short, prepared script for a lent accelerator (issue 4: >= 50 % MFU on an H100/H200-class card). It
runs the production path (:class:`scratchllm.train.loop.Trainer`, :func:`scratchllm.train.optim.build_adamw`,
``next_token_loss``) on random tokens, eager and compiled, and prints tokens/s and MFU against both the
datasheet's dense bf16 peak and a matmul peak measured in the same run. It stops early when ``--budget-s``
runs out, so a device call never ends without a table.

    python benchmarks/bench_gpu_mfu.py                                   # on the GPU: gpt2-small, 16 x 1024
    python benchmarks/bench_gpu_mfu.py --device cpu --preset tiny --batch 2 --context 64 --steps 2 --precision fp32   # smoke
"""

from __future__ import annotations

import argparse
import time

import torch

from scratchllm.config import ModelConfig
from scratchllm.model import GPTModel
from scratchllm.train.logging import flops_per_token, measure_matmul_flops, peak_flops
from scratchllm.train.loop import Trainer
from scratchllm.train.optim import build_adamw


class RandomBatches:
    """Random token windows made on the device itself (throughput does not depend on the text)."""

    def __init__(self, vocab: int, batch: int, context: int, device: torch.device) -> None:
        self.vocab, self.batch, self.context, self.device = vocab, batch, context, device
        self.drawn = 0

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        self.drawn += 1
        rows = torch.randint(0, self.vocab, (self.batch, self.context + 1), device=self.device)
        return rows[:, :-1], rows[:, 1:]

    def state_dict(self) -> dict[str, int]:
        return {"drawn": self.drawn}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.drawn = state["drawn"]


def seconds_per_step(
    cfg: ModelConfig,
    device: torch.device,
    batch: int,
    precision: str,
    compiled: bool,
    steps: int,
    warmup: int,
) -> float:
    """Mean wall time of ``steps`` optimizer steps after ``warmup`` untimed ones (compilation happens there)."""
    torch.manual_seed(0)
    model = GPTModel(cfg).to(device)
    if compiled:
        model.compile()
    optimizer = build_adamw(model, lr=1e-4, weight_decay=0.1)
    trainer = Trainer(
        model,
        optimizer,
        RandomBatches(cfg.vocab_size, batch, cfg.context_length, device),
        max_steps=warmup + steps,
        precision=precision,
        device=device,
    )
    for _ in range(warmup):
        trainer.train_step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="auto", help="cuda, cpu or auto")
    parser.add_argument("--preset", default="gpt2-small")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    parser.add_argument("--budget-s", type=float, default=420.0, help="skip what would start after this")
    args = parser.parse_args()

    begun = time.perf_counter()
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    cfg = ModelConfig.from_preset(args.preset, context_length=args.context, drop_rate=0.0)
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    datasheet = peak_flops(device, args.precision)
    measured = measure_matmul_flops(device, dtype, 8192 if device.type == "cuda" else 1024, 1.0)
    with torch.device("meta"):
        probe = GPTModel(cfg)
    fpt = flops_per_token(
        probe, n_layers=cfg.n_layers, emb_dim=cfg.emb_dim, context_length=cfg.context_length
    )
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"{name}, torch {torch.__version__}, {args.preset} ({probe.num_parameters() / 1e6:.1f}M), batch "
        f"{args.batch} x {args.context}, {args.precision}; {fpt / 1e9:.2f} GFLOP/token"
    )
    if device.type == "cuda":
        print(
            f"flash SDPA enabled: {torch.backends.cuda.flash_sdp_enabled()}; peak {args.precision}: "
            f"datasheet {datasheet / 1e12:.0f} TFLOP/s, measured matmul {measured / 1e12:.0f} TFLOP/s"
        )
    else:
        print(f"peak {args.precision}: {datasheet / 1e9:.1f} GFLOP/s (measured matmul {measured / 1e9:.1f})")
    header = f"{'compile':<8} {'s/step':>8} {'tokens/s':>11} {'MFU (datasheet)':>16} {'MFU (measured)':>15}"
    print(header)
    print("-" * len(header))
    for compiled in (False, True):
        if time.perf_counter() - begun > args.budget_s:
            print(f"{'yes' if compiled else 'no':<8} skipped: --budget-s {args.budget_s:.0f} s spent")
            continue
        seconds = seconds_per_step(cfg, device, args.batch, args.precision, compiled, args.steps, args.warmup)
        tps = args.batch * args.context / seconds
        print(
            f"{'yes' if compiled else 'no':<8} {seconds:>8.4f} {tps:>11,.0f} {100 * tps * fpt / datasheet:>15.1f}%"
            f" {100 * tps * fpt / measured:>14.1f}%",
            flush=True,
        )
    print("\nMFU = tokens/s x (6N + 12 L d T) / peak; N excludes the position embedding (a lookup).")


if __name__ == "__main__":
    main()
