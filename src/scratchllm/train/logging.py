"""What a run reports: a metrics CSV, TensorBoard (when installed), a loss-curve PNG and a progress line.

``metrics.csv`` has one row per logged step (``kind=train``: the step's loss, learning rate, gradient norm,
throughput, MFU) and one per evaluation (``kind=eval``: loss on fixed train and validation batch sets and the
validation perplexity). Rows are appended and flushed at once, so the file is readable while training runs; on
resume, rows after the checkpoint's step are dropped so the curve does not double back.

MFU (model FLOPs utilisation, PaLM appendix B) = achieved model FLOP/s / peak FLOP/s, with
``6 * N`` FLOPs per token for the matmul parameters (forward 2N + backward 4N) plus ``12 * n_layers * d * T`` for
attention scores and their weighted sum (full, not causal-halved, as in the PaLM convention). On a CPU the peak
is measured (best of several short matmul trials, since a busy machine only ever lowers a trial); a figure
above 100 % means the measurement understated the peak, so it is reported as ``n/a``, never printed.
"""

from __future__ import annotations

import csv
import math
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import nn

from scratchllm.atomic import atomic_file

COLUMNS = [
    "kind",
    "step",
    "tokens_seen",
    "train_loss",
    "val_loss",
    "val_perplexity",
    "lr",
    "grad_norm",
    "tokens_per_s",
    "mfu",
    "skipped_steps",
    "elapsed_s",
]


# ---------------------------------------------------------------------------------------------- FLOPs
def matmul_parameters(model: nn.Module) -> int:
    """Parameters that take part in a matrix multiply: all but embedding lookups (a tied LM head counts)."""
    linear_weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    lookup_only = {
        id(m.weight)
        for m in model.modules()
        if isinstance(m, nn.Embedding) and id(m.weight) not in linear_weights
    }
    return sum(p.numel() for p in model.parameters() if id(p) not in lookup_only)


def flops_per_token(model: nn.Module, *, n_layers: int, emb_dim: int, context_length: int) -> float:
    """Training FLOPs per token: ``6 N + 12 L d T`` (see module docstring)."""
    return 6.0 * matmul_parameters(model) + 12.0 * n_layers * emb_dim * context_length


# Dense peak FLOP/s from vendor datasheets (no sparsity): (bf16, fp32 / tf32-off).
_GPU_PEAKS = {
    "H200": (989e12, 67e12),
    "H100": (989e12, 67e12),
    "A100": (312e12, 19.5e12),
    "A10G": (125e12, 31.2e12),
    "L4": (121e12, 30.3e12),
    "RTX 4090": (165e12, 82.6e12),
    "RTX 3090": (71e12, 35.6e12),
    "V100": (125e12, 15.7e12),
    "T4": (65e12, 8.1e12),
}


def measure_matmul_flops(
    device: torch.device, dtype: torch.dtype, size: int = 1024, seconds: float = 0.1, trials: int = 5
) -> float:
    """Achieved FLOP/s of a square matmul on ``device``: the practical peak when no datasheet applies (CPUs).

    The best of ``trials`` runs of ``seconds`` each: other work on the machine can only slow a trial down, so
    the fastest one is the closest to what the hardware can do.
    """
    # A generator of its own: drawing from the global one would shift the dropout masks of a resumed run.
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
    b = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
    torch.matmul(a, b)  # warm up (thread pool, kernels)
    best = 0.0
    for _ in range(trials):
        runs = 0
        start = time.perf_counter()
        while True:
            torch.matmul(a, b)
            runs += 1
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                break
        best = max(best, 2.0 * size**3 * runs / elapsed)
    return best


def peak_flops(device: torch.device, precision: str) -> float:
    """Peak FLOP/s of one device: a datasheet figure for known GPUs, else a quick matmul measurement."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, (bf16, fp32) in _GPU_PEAKS.items():
            if key in name:
                return bf16 if precision == "bf16" else fp32
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    return measure_matmul_flops(device, dtype)


def model_flops_utilization(
    tokens_per_s: float, flops_per_token: float | None, peak: float | None, devices: int = 1
) -> float | None:
    """Achieved model FLOP/s over the peak of ``devices`` devices, or None when unknown or unsupportable.

    A value above 1 cannot be true: the peak was understated (e.g. measured while the machine was busy). It is
    returned as None (shown as ``n/a``) rather than as a figure the measurement cannot support.
    """
    if not flops_per_token or not peak:
        return None
    mfu = tokens_per_s * flops_per_token / (peak * max(1, devices))
    return mfu if mfu <= 1.0 else None


# ---------------------------------------------------------------------------------------------- progress text
def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def progress_line(
    *, step: int, max_steps: int, loss: float, lr: float, tokens_per_s: float, mfu: float | None, eta_s: float
) -> str:
    """``step 120/1000 | loss 3.2104 | lr 5.97e-04 | 12,345 tok/s | MFU 12.3% | ETA 5m12s``."""
    mfu_text = f"{100 * mfu:.1f}%" if mfu is not None else "n/a"
    return (
        f"step {step}/{max_steps} | loss {loss:.4f} | lr {lr:.2e} | {tokens_per_s:,.0f} tok/s | "
        f"MFU {mfu_text} | ETA {format_duration(eta_s)}"
    )


# ---------------------------------------------------------------------------------------------- the logger
class MetricsLogger:
    """Writes ``metrics.csv`` (+ TensorBoard events, + ``loss.png``) in ``run_dir``; a no-op when disabled.

    Args:
        run_dir: run folder.
        enabled: False on every process but rank 0.
        resume_step: when resuming, keep only rows up to this step.
        stream: where progress lines go (stderr).
    """

    def __init__(
        self,
        run_dir: Path,
        *,
        enabled: bool = True,
        resume_step: int | None = None,
        stream: TextIO | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.csv_path = self.run_dir / "metrics.csv"
        self.png_path = self.run_dir / "loss.png"
        self.rows: list[dict[str, Any]] = []
        self._tb: Any = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.csv_path.is_file():
            with open(self.csv_path, newline="", encoding="utf-8") as fh:
                self.rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= resume_step]
        with atomic_file(self.csv_path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(self.rows)
        try:  # TensorBoard is optional: skipped silently when it is not installed
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return
        # On resume, purge_step tells TensorBoard to drop the old run's points after the checkpoint, as the CSV
        # does, so a resumed curve does not show two values for the same step.
        purge = resume_step + 1 if resume_step is not None else None
        self._tb = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"), purge_step=purge)

    def _append(self, row: dict[str, Any]) -> None:
        row = {k: ("" if row.get(k) is None else row.get(k)) for k in COLUMNS}
        self.rows.append(row)
        with open(self.csv_path, "a", newline="", encoding="utf-8") as fh:
            csv.DictWriter(fh, fieldnames=COLUMNS).writerow(row)

    def log_train(self, row: dict[str, Any], progress: str | None = None) -> None:
        """One ``kind=train`` row (keys from :data:`COLUMNS`) and an optional progress line to stderr."""
        if not self.enabled:
            return
        self._append({"kind": "train", **row})
        if self._tb is not None:
            for key in ("train_loss", "lr", "grad_norm", "tokens_per_s", "mfu"):
                if row.get(key) is not None:
                    self._tb.add_scalar(f"train/{key}", float(row[key]), int(row["step"]))
        if progress:
            print(progress, file=self.stream, flush=True)

    def log_eval(self, row: dict[str, Any], message: str | None = None) -> None:
        """One ``kind=eval`` row; refreshes ``loss.png``."""
        if not self.enabled:
            return
        self._append({"kind": "eval", **row})
        if self._tb is not None:
            for key in ("train_loss", "val_loss", "val_perplexity"):
                if row.get(key) is not None:
                    self._tb.add_scalar(f"eval/{key}", float(row[key]), int(row["step"]))
            self._tb.flush()
        if message:
            print(message, file=self.stream, flush=True)
        self.plot()

    def plot(self) -> None:
        """Train and validation loss against tokens seen, written atomically to ``loss.png``."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        def series(kind: str, column: str) -> tuple[list[float], list[float]]:
            xs, ys = [], []
            for r in self.rows:
                if r["kind"] == kind and r[column] not in ("", None):
                    xs.append(float(r["tokens_seen"]))
                    ys.append(float(r[column]))
            return xs, ys

        fig, ax = plt.subplots(figsize=(7, 4.2))
        x, y = series("train", "train_loss")
        if x:
            ax.plot(x, y, color="tab:blue", alpha=0.35, linewidth=1, label="train (step)")
        x, y = series("eval", "train_loss")
        if x:
            ax.plot(x, y, "o-", color="tab:blue", label="train (eval set)")
        x, y = series("eval", "val_loss")
        if x:
            ax.plot(x, y, "s-", color="tab:orange", label="validation")
        ax.set_xlabel("tokens seen")
        ax.set_ylabel("cross-entropy loss")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
        fig.tight_layout()
        with atomic_file(self.png_path) as tmp:
            fig.savefig(tmp, dpi=100)
        plt.close(fig)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
