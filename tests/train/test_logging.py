"""Metrics CSV, loss plot, progress text and the FLOPs estimate behind MFU."""

from __future__ import annotations

import csv
import io
import types

import torch

from dev_deps import require
from scratchllm.model import GPTModel
from scratchllm.train.logging import (
    MetricsLogger,
    flops_per_token,
    format_duration,
    matmul_parameters,
    measure_matmul_flops,
    model_flops_utilization,
    progress_line,
)


def test_matmul_parameters_count_tied_head_once_and_skip_lookups(tiny_config):
    tied = GPTModel(tiny_config(tie_embeddings=True))
    untied = GPTModel(tiny_config(tie_embeddings=False))
    pos = tied.pos_emb.weight.numel()
    vocab_matrix = tied.tok_emb.weight.numel()
    total_tied = sum(p.numel() for p in tied.parameters())
    # tied: the token matrix is the LM head (a matmul) -> counted; position embedding is a lookup -> not.
    assert matmul_parameters(tied) == total_tied - pos
    # untied: the token embedding is only a lookup; the separate LM head is counted.
    total_untied = sum(p.numel() for p in untied.parameters())
    assert matmul_parameters(untied) == total_untied - pos - vocab_matrix
    cfg = tied.config
    expected = 6 * (total_tied - pos) + 12 * cfg.n_layers * cfg.emb_dim * cfg.context_length
    assert flops_per_token(tied, n_layers=cfg.n_layers, emb_dim=cfg.emb_dim, context_length=16) == expected


def test_progress_line_and_duration():
    line = progress_line(
        step=120, max_steps=1000, loss=3.21041, lr=5.97e-4, tokens_per_s=12345.4, mfu=0.123, eta_s=312
    )
    assert line == "step 120/1000 | loss 3.2104 | lr 5.97e-04 | 12,345 tok/s | MFU 12.3% | ETA 5m12s"
    assert format_duration(3 * 3600 + 7 * 60) == "3h07m"
    assert "MFU n/a" in progress_line(
        step=1, max_steps=2, loss=1.0, lr=1.0, tokens_per_s=1, mfu=None, eta_s=0
    )


def test_csv_png_and_resume_truncation(tmp_path):
    out = io.StringIO()
    logger = MetricsLogger(tmp_path, stream=out)
    for step in (1, 2, 3, 4):
        logger.log_train(
            {"step": step, "tokens_seen": 64 * step, "train_loss": 5.0 - step / 10}, f"step {step}"
        )
    logger.log_eval(
        {"step": 2, "tokens_seen": 128, "train_loss": 4.8, "val_loss": 4.9, "val_perplexity": 134.3}
    )
    logger.close()
    assert out.getvalue().splitlines() == ["step 1", "step 2", "step 3", "step 4"]
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [r["kind"] for r in rows] == ["train"] * 4 + ["eval"]
    assert rows[-1]["val_loss"] == "4.9" and rows[0]["val_loss"] == ""
    png = (tmp_path / "loss.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 1000
    # Resuming from step 2 drops the rows of steps 3 and 4, which the resumed run will write again.
    MetricsLogger(tmp_path, resume_step=2).close()
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [(r["kind"], r["step"]) for r in rows] == [("train", "1"), ("train", "2"), ("eval", "2")]


def test_disabled_logger_writes_nothing(tmp_path):
    logger = MetricsLogger(tmp_path / "run", enabled=False)
    logger.log_train({"step": 1, "tokens_seen": 1, "train_loss": 1.0}, "x")
    assert not (tmp_path / "run").exists()


def tensorboard_scalars(folder, tag):
    accumulator = require("tensorboard.backend.event_processing.event_accumulator")
    EventAccumulator = accumulator.EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return [(e.step, round(e.value, 6)) for e in events.Scalars(tag)]


def test_tensorboard_gets_the_same_points_and_a_resume_replaces_the_tail(tmp_path):
    require("tensorboard")  # MetricsLogger itself leaves TensorBoard out silently when it is missing
    logger = MetricsLogger(tmp_path, stream=io.StringIO())
    for step in (1, 2, 3, 4):
        logger.log_train({"step": step, "tokens_seen": step, "train_loss": 5.0 - step / 10, "lr": 0.1})
    logger.log_eval(
        {"step": 4, "tokens_seen": 4, "train_loss": 4.6, "val_loss": 4.7, "val_perplexity": 110.0}
    )
    logger.close()
    assert tensorboard_scalars(tmp_path / "tensorboard", "train/train_loss") == [
        (1, 4.9),
        (2, 4.8),
        (3, 4.7),
        (4, 4.6),
    ]
    assert tensorboard_scalars(tmp_path / "tensorboard", "eval/val_loss") == [(4, 4.7)]
    # Resumed from step 2: steps 3 and 4 are trained again (other losses); TensorBoard must show the new ones.
    resumed = MetricsLogger(tmp_path, resume_step=2, stream=io.StringIO())
    for step in (3, 4):
        resumed.log_train({"step": step, "tokens_seen": step, "train_loss": 1.0 + step, "lr": 0.1})
    resumed.close()
    assert tensorboard_scalars(tmp_path / "tensorboard", "train/train_loss") == [
        (1, 4.9),
        (2, 4.8),
        (3, 4.0),
        (4, 5.0),
    ]


def test_peak_measurement_keeps_the_fastest_of_several_trials(monkeypatch):
    """A trial slowed down by other work must not lower the peak: the best trial counts."""
    clock = iter([0.0, 1.0, 0.0, 0.1, 0.0, 0.5])  # three trials of one matmul each: 1.0 s, 0.1 s, 0.5 s
    monkeypatch.setattr("scratchllm.train.logging.time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
    flops = measure_matmul_flops(torch.device("cpu"), torch.float32, size=8, seconds=0.1, trials=3)
    assert flops == 2 * 8**3 / 0.1


def test_mfu_above_100_percent_is_never_reported():
    assert model_flops_utilization(500.0, 1e6, 1e9) == 0.5
    assert model_flops_utilization(500.0, 1e6, 1e9, devices=2) == 0.25
    assert model_flops_utilization(1300.0, 1e6, 1e9) is None  # 130 %: the peak was understated
    assert model_flops_utilization(500.0, None, 1e9) is None

    from scratchllm.train.callbacks import LogCallback
    from scratchllm.train.loop import StepMetrics, TrainState

    rows, lines = [], []
    logger = types.SimpleNamespace(log_train=lambda row, line: (rows.append(row), lines.append(line)))
    callback = LogCallback(logger, 1, flops_per_token=1e6, peak_flops=1e9)
    trainer = types.SimpleNamespace(max_steps=10, stop_at_step=None, max_seconds=None, state=TrainState())
    for step, seconds in ((1, 1.0), (2, 1.0), (3, 10.0)):  # 1,300 tok/s = 130 % twice, then 13 %
        callback.on_step_end(trainer, StepMetrics(step, 2.0, 1e-3, 1.0, 1300, 1300 * step, seconds))
    assert [row["mfu"] for row in rows] == [None, None, 0.13]
    assert "MFU n/a" in lines[0] and "| MFU n/a: it would exceed 100 % of the peak 1e+09 FLOP/s" in lines[0]
    assert "exceed" not in lines[1]  # the note is given once
    assert "MFU 13.0%" in lines[2] and not any("MFU 130" in line for line in lines)
