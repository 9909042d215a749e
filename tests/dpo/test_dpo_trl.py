"""Our DPO equals TRL's: the same tiny Llama trained on the same pairs gives the same losses and weights."""

from __future__ import annotations

import copy

import pytest
import torch

from dev_deps import require
from finetune.finetune_models import tiny_model
from scratchllm.data.batches import ExampleBatches
from scratchllm.data.preference import PreferenceExample, collate
from scratchllm.train.dpo import DPOLoss
from scratchllm.train.loop import Callback, Trainer
from scratchllm.train.optim import build_adamw
from scratchllm.weights.hf import state_dict_to_hf, to_hf

WORDS = "what is two plus three four five good bad yes no the answer sure maybe".split()
PAIRS = [
    {"prompt": "what is two plus two", "chosen": " four", "rejected": " five bad"},
    {"prompt": "is the answer yes", "chosen": " yes sure", "rejected": " no"},
    {"prompt": "two plus three", "chosen": " five good", "rejected": " four maybe no"},
    {"prompt": "good or bad", "chosen": " good", "rejected": " bad bad"},
]
BETA, LR, STEPS = 0.1, 1e-2, 5


def _hf_tokenizer(transformers, folder):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<pad>": 0, "</s>": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>")
    fast.save_pretrained(folder)
    return fast


def _trl_run(tmp_path, transformers):
    trl = require("trl")
    datasets = require("datasets")
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32)
    losses = []

    class Recording(trl.DPOTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if model.training:
                losses.append(loss.detach().item())
            return loss

    args = trl.DPOConfig(
        output_dir=str(tmp_path / "trl"), beta=BETA, loss_type=["sigmoid"], learning_rate=LR, max_steps=STEPS,
        per_device_train_batch_size=len(PAIRS), lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
        adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, optim="adamw_torch", max_grad_norm=0.0,
        gradient_checkpointing=False, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, seed=0,
        disable_tqdm=True, max_length=None, dataloader_num_workers=0, bf16=False, fp16=False,
    )  # fmt: skip
    trainer = Recording(
        model=model, args=args, train_dataset=datasets.Dataset.from_list(PAIRS),
        processing_class=_hf_tokenizer(transformers, tmp_path / "hf"),
    )  # fmt: skip
    data = trainer.train_dataset
    examples = [
        PreferenceExample(tuple(p), tuple(c), tuple(r))
        for p, c, r in zip(data["prompt_ids"], data["chosen_ids"], data["rejected_ids"])
    ]
    trainer.train()
    return losses, {k: v.detach() for k, v in model.state_dict().items()}, examples


class _Losses(Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_step_end(self, trainer, metrics) -> None:
        self.losses.append(metrics.loss)


def test_losses_and_weights_equal_trl_dpo(tmp_path, transformers) -> None:
    policy = tiny_model("llama", vocab_size=len(WORDS) + 2).train()
    to_hf(policy, tmp_path / "hf")
    trl_losses, trl_weights, examples = _trl_run(tmp_path, transformers)
    assert [len(e.chosen_ids) for e in examples] == [2, 3, 3, 2]  # the answer and TRL's appended </s>

    batches = ExampleBatches(examples, len(examples), lambda ex: collate(ex, pad_id=0), seed=0)
    objective = DPOLoss(BETA, reference_model=copy.deepcopy(policy))
    optimizer = build_adamw(policy, lr=LR, weight_decay=0.0, betas=(0.9, 0.999), eps=1e-8)
    recorder = _Losses()
    Trainer(policy, optimizer, batches, max_steps=STEPS, loss_fn=objective, grad_clip=0.0, callbacks=[recorder]).fit()

    assert recorder.losses[0] == pytest.approx(0.6931471805599453, abs=1e-7)  # ln 2: policy == reference
    assert len(trl_losses) == STEPS
    torch.testing.assert_close(torch.tensor(recorder.losses), torch.tensor(trl_losses), rtol=1e-4, atol=0)
    assert trl_losses[-1] < trl_losses[0] - 0.05  # they trained, not just agreed at ln 2
    ours = state_dict_to_hf(policy, policy.config)
    assert set(ours) <= set(trl_weights)  # theirs also lists the tied lm_head.weight
    for name, tensor in ours.items():
        torch.testing.assert_close(tensor, trl_weights[name], rtol=0, atol=1e-4)
    start = state_dict_to_hf(tiny_model("llama", vocab_size=len(WORDS) + 2), policy.config)
    moved = max((ours[name] - tensor).abs().max().item() for name, tensor in start.items())
    assert moved > 1e-2  # the weights both runs agree on are far from where they started
