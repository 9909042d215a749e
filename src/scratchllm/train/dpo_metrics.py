"""DPO's evaluation record: rewards, margin and reward accuracy per evaluation, as a CSV and a plot.

:class:`PreferenceEvaluation` is a :class:`~scratchllm.train.loop.Callback` the DPO recipe
(:mod:`scratchllm.recipes.dpo`) places right after the run's evaluation callback.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from scratchllm.train.dpo import METRICS, describe
from scratchllm.train.loop import Callback, StepMetrics, Trainer

METRICS_CSV = "dpo_metrics.csv"
MARGINS_PNG = "margins.png"
Log = Callable[[str], None]


class PreferenceEvaluation(Callback):
    """Rewards, margin and reward accuracy at every evaluation: ``dpo_metrics.csv`` and ``margins.png``.

    It takes over the losses of the run's :class:`~scratchllm.train.callbacks.EvalCallback` (the DPO loss of
    each set, computed together with the other metrics in one pass) and, placed right after it, writes what
    that pass measured. Before the first step it evaluates once, so the curves start at the reference (margin
    0). Both files are rewritten atomically; on resume the rows after the checkpoint's step are dropped.
    """

    def __init__(
        self, evaluator: Any, sets: dict[str, list[Any]], measure: Callable[[list[Any]], dict[str, float]],
        out_dir: Path, *, enabled: bool, resume_step: int | None, say: Log,
    ) -> None:  # fmt: skip
        self.evaluator = evaluator
        self.measure = measure
        self.out_dir = Path(out_dir)
        self.enabled = enabled
        self.say = say
        self.latest: dict[str, dict[str, float]] = {}
        self.rows: list[dict[str, Any]] = []
        if resume_step is not None and (self.out_dir / METRICS_CSV).is_file():
            with open(self.out_dir / METRICS_CSV, newline="", encoding="utf-8") as fh:
                self.rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= resume_step]
        evaluator.losses = {name: self._loss_of(name, batches) for name, batches in sets.items()}

    def _loss_of(self, name: str, batches: list[Any]) -> Callable[[], float]:
        def loss() -> float:
            self.latest[name] = self.measure(batches)
            return self.latest[name]["loss"]

        return loss

    def _record(self, step: int) -> None:
        for name, metrics in self.latest.items():
            self.rows.append({"step": step, "split": name, **metrics})
            self.say(f"dpo eval step {step} | {name}: {describe(metrics)}")
        self.latest = {}
        if self.enabled:
            self._write()

    def _write(self) -> None:
        from scratchllm.atomic import write_text_atomic

        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=["step", "split", *METRICS])
        writer.writeheader()
        writer.writerows(self.rows)
        write_text_atomic(self.out_dir / METRICS_CSV, text.getvalue())
        plot_margins(self.rows, self.out_dir / MARGINS_PNG)

    def on_train_start(self, trainer: Trainer) -> None:
        if trainer.state.step == 0:
            self.evaluator.evaluate(trainer)
            self._record(0)

    def on_step_end(self, trainer: Trainer, metrics: StepMetrics) -> None:
        if self.latest:
            self._record(metrics.step)

    def on_train_end(self, trainer: Trainer) -> None:
        if self.latest:
            self._record(trainer.state.step)


def plot_margins(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Reward margin (with the chosen and rejected rewards) and reward accuracy against steps, per split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from scratchllm.atomic import atomic_file

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    for split, color in (("train", "tab:blue"), ("val", "tab:orange")):
        mine = [r for r in rows if r["split"] == split]
        steps = [int(r["step"]) for r in mine]
        if not mine:
            continue
        top.plot(steps, [float(r["margin"]) for r in mine], "o-", color=color, label=f"{split} margin")
        for key, style in (("chosen_reward", "--"), ("rejected_reward", ":")):
            label = f"{split} {key.split('_')[0]}"
            top.plot(steps, [float(r[key]) for r in mine], style, color=color, alpha=0.6, label=label)
        bottom.plot(steps, [100 * float(r["accuracy"]) for r in mine], "s-", color=color, label=split)
    top.set_ylabel("reward (beta * log ratio)")
    top.axhline(0.0, color="gray", linewidth=0.8)
    bottom.set_ylabel("reward accuracy (%)")
    bottom.set_xlabel("step")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
