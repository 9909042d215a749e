"""Pretraining throughput: tokens/s and MFU of full training steps through our Trainer, against Hugging Face.

One step = forward + cross-entropy + backward + gradient clipping + AdamW (weight decay on matmul weights only),
run by :class:`scratchllm.train.loop.Trainer` for both models (Hugging Face's ``GPT2LMHeadModel`` plugs in through
the loss function), on random tokens. Measured in one run:

* the machine's matmul peak (fp32 and bf16), which MFU is relative to;
* ours vs Hugging Face, fp32 and bf16 autocast, eager and ``torch.compile``;
* ours with 1 vs 2 processes (DDP over gloo, same global batch, threads split between the processes);
* optionally (``--loss-curve N``) how far the bf16-autocast loss curve strays from fp32 over N steps.

    .venv/bin/python benchmarks/bench_pretrain.py                          # gpt2-small, batch 4 x 256
    .venv/bin/python benchmarks/bench_pretrain.py --preset tiny --context 64 --steps 2 --warmup 1   # smoke test
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from scratchllm.config import ModelConfig
from scratchllm.model import GPTModel
from scratchllm.train.logging import flops_per_token, measure_matmul_flops
from scratchllm.train.loop import Trainer, next_token_loss
from scratchllm.train.optim import build_adamw


class RandomTokens:
    """A batch source of random token windows (throughput does not depend on the text)."""

    def __init__(
        self, vocab: int, batch: int, context: int, seed: int = 0, rank: int = 0, world: int = 1
    ) -> None:
        self.vocab, self.batch, self.context = vocab, batch, context
        self.seed, self.rank, self.world = seed, rank, world
        self.drawn = 0

    def next_batch(self):
        gen = torch.Generator().manual_seed(self.seed * 7919 + self.drawn)
        self.drawn += 1
        rows = torch.randint(0, self.vocab, (self.batch * self.world, self.context + 1), generator=gen)
        rows = rows[self.rank * self.batch : (self.rank + 1) * self.batch]
        return rows[:, :-1].contiguous(), rows[:, 1:].contiguous()

    def state_dict(self):
        return {"drawn": self.drawn}

    def load_state_dict(self, state):
        self.drawn = state["drawn"]


def hf_loss(model, batch):
    inputs, targets = batch
    logits = model(inputs).logits
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


def build(impl: str, cfg: ModelConfig, compile_model: bool) -> tuple[torch.nn.Module, object]:
    torch.manual_seed(0)
    if impl == "ours":
        model = GPTModel(cfg)
        loss_fn = next_token_loss
    else:
        from transformers import GPT2Config, GPT2LMHeadModel

        hf_cfg = GPT2Config(
            vocab_size=cfg.vocab_size,
            n_positions=cfg.context_length,
            n_embd=cfg.emb_dim,
            n_layer=cfg.n_layers,
            n_head=cfg.n_heads,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=cfg.vocab_size - 1,
            eos_token_id=cfg.vocab_size - 1,
        )
        hf_cfg._attn_implementation = "sdpa"  # the fused attention kernel, as ours uses
        model = GPT2LMHeadModel(hf_cfg)
        loss_fn = hf_loss
    if compile_model:
        model.compile()
    return model, loss_fn


def time_steps(model, loss_fn, source, precision: str, steps: int, warmup: int) -> float:
    """Seconds per optimizer step, median-free: total time of ``steps`` steps after ``warmup`` steps."""
    optimizer = build_adamw(model, lr=1e-4, weight_decay=0.1)
    trainer = Trainer(
        model, optimizer, source, max_steps=warmup + steps, loss_fn=loss_fn, precision=precision
    )
    for _ in range(warmup):
        trainer.train_step()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    return (time.perf_counter() - start) / steps


def _ddp_worker(rank: int, world: int, cfg_dict: dict, batch: int, steps: int, warmup: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // world))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    from torch.nn.parallel import DistributedDataParallel

    cfg = ModelConfig(**cfg_dict)
    torch.manual_seed(0)
    model = DistributedDataParallel(GPTModel(cfg))
    source = RandomTokens(cfg.vocab_size, batch // world, cfg.context_length, rank=rank, world=world)
    seconds = time_steps(model, next_token_loss, source, "fp32", steps, warmup)
    if rank == 0:
        Path(out).write_text(str(seconds))
    torch.distributed.destroy_process_group()


def ddp_seconds_per_step(cfg: ModelConfig, batch: int, steps: int, warmup: int, world: int) -> float:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        os.environ["MASTER_PORT"] = str(s.getsockname()[1])
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "seconds")
        mp.spawn(_ddp_worker, args=(world, cfg.to_dict(), batch, steps, warmup, out), nprocs=world, join=True)
        return float(Path(out).read_text())


class RepeatedText(RandomTokens):
    """Random windows over a short random sequence repeated many times: learnable, so the loss falls."""

    def __init__(self, vocab: int, batch: int, context: int) -> None:
        super().__init__(vocab, batch, context)
        gen = torch.Generator().manual_seed(1)
        self.text = torch.randint(0, vocab, (400,), generator=gen).repeat(50)

    def next_batch(self):
        gen = torch.Generator().manual_seed(self.drawn)
        self.drawn += 1
        starts = torch.randint(0, self.text.numel() - self.context - 1, (self.batch,), generator=gen).tolist()
        x = torch.stack([self.text[s : s + self.context] for s in starts])
        y = torch.stack([self.text[s + 1 : s + 1 + self.context] for s in starts])
        return x, y


def loss_curves(steps: int) -> dict[str, list[float]]:
    """Losses of the same small run (same init, same batches) in fp32 and in bf16 autocast."""
    cfg = ModelConfig(vocab_size=512, context_length=64, emb_dim=128, n_heads=4, n_layers=2)
    curves = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = GPTModel(cfg)
        trainer = Trainer(
            model, build_adamw(model, lr=3e-3), RepeatedText(512, 8, 64), max_steps=steps, precision=precision
        )
        curves[precision] = [trainer.train_step().loss for _ in range(steps)]
    return curves


def loss_curve_gap(steps: int) -> float:
    """Largest relative gap between the bf16-autocast and fp32 loss curves over ``steps`` steps."""
    curves = loss_curves(steps)
    return max(abs(b - a) / a for a, b in zip(curves["fp32"], curves["bf16"]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="gpt2-small")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--n-layers", type=int, default=None, help="override the preset's depth")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per configuration")
    parser.add_argument(
        "--warmup", type=int, default=2, help="untimed steps first (compilation happens here)"
    )
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--impls", nargs="+", default=["ours", "hf"], choices=["ours", "hf"])
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    parser.add_argument("--no-ddp", action="store_true", help="skip the 1 vs 2 process rows")
    parser.add_argument("--peak-size", type=int, default=1024, help="matmul size for the peak measurement")
    parser.add_argument(
        "--loss-curve", type=int, default=0, help="also compare bf16 vs fp32 losses over N steps"
    )
    args = parser.parse_args()

    overrides = {"context_length": args.context}
    if args.n_layers:
        overrides["n_layers"] = args.n_layers
    cfg = ModelConfig.from_preset(args.preset, **overrides)
    tokens = args.batch * args.context
    peaks = {
        "fp32": measure_matmul_flops(torch.device("cpu"), torch.float32, args.peak_size, 1.0),
        "bf16": measure_matmul_flops(torch.device("cpu"), torch.bfloat16, args.peak_size, 1.0),
    }
    probe = GPTModel(cfg)
    fpt = flops_per_token(
        probe, n_layers=cfg.n_layers, emb_dim=cfg.emb_dim, context_length=cfg.context_length
    )
    n_params = sum(p.numel() for p in probe.parameters())
    del probe
    print(
        f"model {args.preset} ({n_params / 1e6:.1f}M parameters, {cfg.n_layers} layers), batch {args.batch} x "
        f"{args.context}, {torch.get_num_threads()} threads; {fpt / 1e9:.2f} GFLOP per token"
    )
    print(
        f"measured matmul peak ({args.peak_size}^3): fp32 {peaks['fp32'] / 1e9:.1f} GFLOP/s, "
        f"bf16 {peaks['bf16'] / 1e9:.1f} GFLOP/s"
    )
    print()
    header = (
        f"{'model':<8} {'precision':<9} {'compile':<8} {'procs':>5} {'s/step':>8} {'tokens/s':>9} {'MFU':>7}"
    )
    print(header)
    print("-" * len(header))

    def row(impl: str, precision: str, compiled: bool, procs: int, seconds: float) -> None:
        tps = tokens / seconds
        mfu = tps * fpt / peaks[precision]
        print(
            f"{impl:<8} {precision:<9} {'yes' if compiled else 'no':<8} {procs:>5} {seconds:>8.3f} "
            f"{tps:>9.1f} {100 * mfu:>6.1f}%",
            flush=True,
        )

    compile_options = [False] if args.no_compile else [False, True]
    for compiled in compile_options:
        for precision in args.precisions:
            for impl in args.impls:
                model, loss_fn = build(impl, cfg, compiled)
                source = RandomTokens(cfg.vocab_size, args.batch, args.context)
                seconds = time_steps(model, loss_fn, source, precision, args.steps, args.warmup)
                row("ours" if impl == "ours" else "HF", precision, compiled, 1, seconds)
                del model
    if not args.no_ddp:
        seconds = ddp_seconds_per_step(cfg, args.batch, args.steps, args.warmup, world=2)
        row("ours", "fp32", False, 2, seconds)
    if args.loss_curve:
        gap = loss_curve_gap(args.loss_curve)
        print(
            f"\nbf16 autocast vs fp32 over {args.loss_curve} steps: largest relative loss gap {100 * gap:.3f}%"
        )
    print("\nMFU = tokens/s x (6N + 12 L d T) / measured matmul peak of the same precision (whole machine).")


if __name__ == "__main__":
    main()
