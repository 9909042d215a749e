"""Direct Preference Optimization (Rafailov et al., 2023): learn from "answer A is better than answer B".

RLHF fits a reward model to human preferences, then maximises that reward with PPO while a KL penalty keeps
the policy near a reference model. DPO's observation: the optimum of that KL-constrained problem is
``pi*(y|x) = ref(y|x) exp(r(x, y) / beta) / Z(x)``, so a reward is *implied* by any policy,
``r(x, y) = beta * log(pi(y|x) / ref(y|x)) + beta * log Z(x)``, and in the Bradley-Terry preference model
``P(chosen > rejected) = sigmoid(r_c - r_r)`` the intractable ``Z(x)`` cancels. Maximum likelihood of the
observed preferences is then a plain classification loss on the policy itself::

    x = beta * ((log pi(chosen) - log ref(chosen)) - (log pi(rejected) - log ref(rejected)))
    loss = -log sigmoid(x)

``log pi(y)`` is the sum of the log-probabilities of the response tokens (the prompt and the padding are
masked out); averaging them instead (``average=True``) removes the pull towards long answers. Conservative DPO
(label smoothing ``ls``) assumes each label is flipped with probability ``ls``:
``(1 - ls) * -log sigmoid(x) + ls * -log sigmoid(-x)``.

What training reports: the implicit rewards ``beta * (log pi - log ref)`` of the chosen and rejected answers,
their difference (the *margin*) and the *reward accuracy*, the share of pairs whose chosen reward is higher.
While the policy equals the reference, every reward is 0 and the loss is exactly ``ln 2``.

The reference is one of three things (:class:`DPOLoss`): a frozen model; the policy itself with its LoRA
adapters switched off (no second copy in memory); or nothing, when the batch carries log-probabilities
precomputed once over the data (:func:`reference_logprobs`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scratchllm.errors import ScratchLLMError

#: where the reference log-probabilities come from (see :class:`DPOLoss`)
REFERENCES = ("model", "adapters_off", "precomputed")
#: per-evaluation metrics, in the order they are reported
METRICS = ("loss", "chosen_reward", "rejected_reward", "margin", "accuracy")


# ---------------------------------------------------------------------------------------------- the math
def response_logprobs(
    model: nn.Module, input_ids: Tensor, response_mask: Tensor, *, average: bool = False
) -> Tensor:
    """``log p(response | prompt)`` of each row: summed (or averaged) over the tokens ``response_mask`` marks.

    ``input_ids`` [N, T] holds prompt + response (+ right padding); ``response_mask`` [N, T] is True at the
    response tokens. Position ``t`` predicts token ``t + 1``, so the logits of ``input_ids[:, :-1]`` score the
    targets ``input_ids[:, 1:]`` and the mask is shifted the same way. Log-softmax in float32.
    """
    logits = model(input_ids[:, :-1])
    targets = input_ids[:, 1:]
    mask = response_mask[:, 1:].to(torch.float32)
    token_logps = -F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none")
    total = (token_logps.view_as(mask) * mask).sum(-1)
    return total / mask.sum(-1).clamp(min=1.0) if average else total


@dataclass
class DPOOutput:
    """Per-pair losses and implicit rewards (rewards carry no gradient)."""

    losses: Tensor
    chosen_rewards: Tensor
    rejected_rewards: Tensor

    @property
    def margins(self) -> Tensor:
        return self.chosen_rewards - self.rejected_rewards


def dpo_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    beta: float,
    label_smoothing: float = 0.0,
) -> DPOOutput:
    """The sigmoid DPO loss of each pair, from sequence log-probabilities of policy and reference."""
    chosen_logratio = policy_chosen - ref_chosen
    rejected_logratio = policy_rejected - ref_rejected
    x = beta * (chosen_logratio - rejected_logratio)
    losses = -(1.0 - label_smoothing) * F.logsigmoid(x) - label_smoothing * F.logsigmoid(-x)
    return DPOOutput(losses, beta * chosen_logratio.detach(), beta * rejected_logratio.detach())


# ---------------------------------------------------------------------------------------------- the reference
@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def check_settings(beta: float, label_smoothing: float, reference: str) -> None:
    if beta <= 0:
        raise ScratchLLMError(f"dpo beta: must be > 0, got {beta}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ScratchLLMError(f"dpo label_smoothing: must be in [0, 0.5), got {label_smoothing}")
    if reference not in REFERENCES:
        raise ScratchLLMError(f"dpo reference: one of {', '.join(REFERENCES)}, got {reference!r}")


class DPOLoss:
    """``loss_fn(model, batch)`` for the :class:`~scratchllm.train.loop.Trainer`: the mean DPO loss of a batch.

    A batch (:func:`scratchllm.data.preference.collate`) is a dict: ``input_ids`` and ``response_mask`` of
    [2B, T] with the B chosen sequences first and the B rejected ones after (one forward pass for both), and
    ``ref_logps`` [2B] when the reference was precomputed.

    Args:
        beta: strength of the KL constraint; the reward scale (0.1 in the paper).
        label_smoothing: probability that a label is wrong (conservative DPO; 0 = the paper's loss).
        average: average the response log-probabilities over their tokens instead of summing them.
        reference: ``"model"`` (``reference_model``), ``"adapters_off"`` (the policy with LoRA switched off)
            or ``"precomputed"`` (``ref_logps`` in the batch).
        reference_model: the frozen reference for ``reference="model"`` (put in eval mode, gradients off).
    """

    def __init__(
        self,
        beta: float = 0.1,
        *,
        label_smoothing: float = 0.0,
        average: bool = False,
        reference: str = "model",
        reference_model: nn.Module | None = None,
    ) -> None:
        check_settings(beta, label_smoothing, reference)
        if (reference == "model") != (reference_model is not None):
            raise ScratchLLMError("dpo: a reference model is needed exactly when reference='model'")
        self.beta = beta
        self.label_smoothing = label_smoothing
        self.average = average
        self.reference = reference
        self.reference_model = reference_model
        if reference_model is not None:
            reference_model.eval().requires_grad_(False)

    def reference_logps(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        """The reference's log-probabilities of every row of ``batch`` (no gradient, no dropout)."""
        if self.reference == "precomputed":
            if "ref_logps" not in batch:
                raise ScratchLLMError("dpo: reference='precomputed' but the batch has no ref_logps")
            return batch["ref_logps"]
        from scratchllm.model.lora import adapters_disabled

        net = model if self.reference == "adapters_off" else self.reference_model
        switch = adapters_disabled(net) if self.reference == "adapters_off" else contextlib.nullcontext()
        with torch.no_grad(), switch, _eval_mode(net):
            return response_logprobs(net, batch["input_ids"], batch["response_mask"], average=self.average)

    def pairs(self, model: nn.Module, batch: dict[str, Tensor]) -> DPOOutput:
        """Losses and rewards of every pair in ``batch``."""
        ref = self.reference_logps(model, batch).to(torch.float32)
        policy = response_logprobs(model, batch["input_ids"], batch["response_mask"], average=self.average)
        n = policy.shape[0] // 2
        return dpo_loss(policy[:n], policy[n:], ref[:n], ref[n:], self.beta, self.label_smoothing)

    def __call__(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        return self.pairs(model, batch).losses.mean()


# ---------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def preference_metrics(
    model: nn.Module, objective: DPOLoss, batches: Iterable[dict[str, Tensor]], device: torch.device | str = "cpu"
) -> dict[str, float]:
    """Mean loss, chosen and rejected rewards, margin and reward accuracy over every pair of ``batches``.

    Means are over pairs (not batches), so the figure does not depend on the batch size. Eval mode inside.
    """
    from scratchllm.train.loop import move_to_device

    sums = dict.fromkeys(METRICS, 0.0)
    pairs = 0
    with _eval_mode(model):
        for batch in batches:
            out = objective.pairs(model, move_to_device(batch, torch.device(device)))
            sums["loss"] += float(out.losses.sum())
            sums["chosen_reward"] += float(out.chosen_rewards.sum())
            sums["rejected_reward"] += float(out.rejected_rewards.sum())
            sums["margin"] += float(out.margins.sum())
            sums["accuracy"] += float((out.margins > 0).sum())
            pairs += out.losses.shape[0]
    if pairs == 0:
        raise ScratchLLMError("dpo: no preference pairs to evaluate")
    return {name: value / pairs for name, value in sums.items()}


@torch.no_grad()
def reference_logprobs(
    model: nn.Module,
    batches: Iterable[dict[str, Tensor]],
    *,
    average: bool = False,
    adapters_off: bool = False,
    device: torch.device | str = "cpu",
) -> list[tuple[float, float]]:
    """``(log ref(chosen), log ref(rejected))`` of every pair, batch by batch in order: the reference run once.

    Precomputing saves a forward pass of the reference per training step and, for full finetuning, the memory
    of a second model (it can be freed once this returns). ``adapters_off`` scores with LoRA switched off.
    """
    from scratchllm.model.lora import adapters_disabled
    from scratchllm.train.loop import move_to_device

    result: list[tuple[float, float]] = []
    switch = adapters_disabled(model) if adapters_off else contextlib.nullcontext()
    with switch, _eval_mode(model):
        for batch in batches:
            batch = move_to_device(batch, torch.device(device))
            logps = response_logprobs(model, batch["input_ids"], batch["response_mask"], average=average)
            n = logps.shape[0] // 2
            result.extend(zip(logps[:n].tolist(), logps[n:].tolist()))
    return result


def describe(metrics: dict[str, Any]) -> str:
    """``loss 0.6931 | rewards chosen 0.000 rejected 0.000 | margin 0.000 | accuracy 0.00 %``."""
    return (
        f"loss {metrics['loss']:.4f} | rewards chosen {metrics['chosen_reward']:.3f} rejected "
        f"{metrics['rejected_reward']:.3f} | margin {metrics['margin']:.3f} | "
        f"accuracy {100 * metrics['accuracy']:.2f} %"
    )
