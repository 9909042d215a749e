"""The DPO loss: by hand, at the first step (ln 2, zero rewards) and with each kind of reference."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from finetune.finetune_models import tiny_model
from scratchllm.data.preference import PreferenceExample, collate
from scratchllm.errors import ScratchLLMError
from scratchllm.model.lora import inject_lora, lora_layers
from scratchllm.train.dpo import DPOLoss, dpo_loss, preference_metrics, reference_logprobs, response_logprobs

PAIRS = [
    PreferenceExample((5, 6, 7), (8, 9, 2), (10, 2)),
    PreferenceExample((11, 12), (13, 14, 15, 2), (16, 17, 2)),
    PreferenceExample((18, 19, 20, 21), (22, 2), (23, 24, 25, 26, 2)),
]


def test_collate_stacks_chosen_then_rejected_with_the_answer_masked_in() -> None:
    batch = collate(PAIRS[:2], pad_id=0)
    assert batch["input_ids"].tolist() == [
        [5, 6, 7, 8, 9, 2], [11, 12, 13, 14, 15, 2], [5, 6, 7, 10, 2, 0], [11, 12, 16, 17, 2, 0],
    ]  # fmt: skip
    assert batch["response_mask"].int().tolist() == [
        [0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 1, 1], [0, 0, 0, 1, 1, 0], [0, 0, 1, 1, 1, 0],
    ]  # fmt: skip
    assert "ref_logps" not in batch
    with_ref = collate([p.with_reference(-1.0, -2.0) for p in PAIRS[:2]])
    assert with_ref["ref_logps"].tolist() == [-1.0, -1.0, -2.0, -2.0]


def test_response_logprobs_sum_only_the_answer_tokens() -> None:
    model = tiny_model()
    batch = collate(PAIRS)
    got = response_logprobs(model, batch["input_ids"], batch["response_mask"])
    for row, (prompt, answer) in enumerate([(p.prompt_ids, p.chosen_ids) for p in PAIRS] + [(p.prompt_ids, p.rejected_ids) for p in PAIRS]):
        ids = torch.tensor([prompt + answer])
        logps = model(ids).log_softmax(-1)[0]
        want = sum(logps[len(prompt) + i - 1, token] for i, token in enumerate(answer))  # alone, unpadded
        assert got[row].item() == pytest.approx(want.item(), abs=1e-5)
    mean = response_logprobs(model, batch["input_ids"], batch["response_mask"], average=True)
    lengths = torch.tensor([len(p.chosen_ids) for p in PAIRS] + [len(p.rejected_ids) for p in PAIRS])
    torch.testing.assert_close(mean, got / lengths)


def test_dpo_loss_by_hand_with_label_smoothing() -> None:
    pc, pr, rc, rr = torch.tensor([-3.0]), torch.tensor([-5.0]), torch.tensor([-4.0]), torch.tensor([-4.5])
    x = 0.5 * ((-3.0 + 4.0) - (-5.0 + 4.5))  # 0.75
    out = dpo_loss(pc, pr, rc, rr, beta=0.5)
    assert out.losses.item() == pytest.approx(math.log1p(math.exp(-x)), rel=1e-6)
    assert (out.chosen_rewards.item(), out.rejected_rewards.item()) == pytest.approx((0.5, -0.25))
    assert out.margins.item() == pytest.approx(0.75)
    smooth = dpo_loss(pc, pr, rc, rr, beta=0.5, label_smoothing=0.2).losses.item()
    assert smooth == pytest.approx(0.8 * math.log1p(math.exp(-x)) + 0.2 * math.log1p(math.exp(x)), rel=1e-6)
    # the gradient pushes the chosen log-probability up and the rejected one down
    pc.requires_grad_(True), pr.requires_grad_(True)
    dpo_loss(pc, pr, rc, rr, beta=0.5).losses.sum().backward()
    assert pc.grad.item() < 0 < pr.grad.item()
    assert pc.grad.item() == pytest.approx(-0.5 * torch.sigmoid(torch.tensor(-x)).item())


def _policy_and_references():
    policy = tiny_model().train()
    frozen = DPOLoss(0.1, reference_model=copy.deepcopy(policy))
    lora_policy = tiny_model().train()
    inject_lora(lora_policy, rank=4, alpha=8)
    return policy, frozen, lora_policy, DPOLoss(0.1, reference="adapters_off")


def test_first_step_loss_is_ln2_and_rewards_zero_for_every_reference() -> None:
    policy, frozen, lora_policy, adapters_off = _policy_and_references()
    batch = collate(PAIRS)
    for net, objective in ((policy, frozen), (lora_policy, adapters_off)):
        out = objective.pairs(net, batch)
        assert torch.equal(out.chosen_rewards, torch.zeros(3)) and torch.equal(out.rejected_rewards, torch.zeros(3))
        assert objective(net, batch).item() == pytest.approx(math.log(2), abs=1e-7)
    refs = reference_logprobs(policy, [collate(PAIRS)])
    precomputed = collate([p.with_reference(c, r) for p, (c, r) in zip(PAIRS, refs)])
    loss = DPOLoss(0.1, reference="precomputed")(policy, precomputed)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)
    metrics = preference_metrics(policy, frozen, [batch])
    assert metrics == pytest.approx({"loss": math.log(2), "chosen_reward": 0, "rejected_reward": 0, "margin": 0, "accuracy": 0})


def test_a_step_raises_the_margin_and_lora_reference_is_the_base_model() -> None:
    _, _, lora_policy, adapters_off = _policy_and_references()
    batch = collate(PAIRS)
    base_logps = response_logprobs(tiny_model(), batch["input_ids"], batch["response_mask"])
    params = [p for p in lora_policy.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.5)
    for _ in range(3):
        optimizer.zero_grad()
        adapters_off(lora_policy, batch).backward()
        optimizer.step()
    assert any(layer.lora_B.abs().sum() > 0 for layer in lora_layers(lora_policy).values())
    torch.testing.assert_close(adapters_off.reference_logps(lora_policy, batch), base_logps, rtol=0, atol=1e-5)
    metrics = preference_metrics(lora_policy, adapters_off, [batch])
    assert metrics["margin"] > 0 and metrics["accuracy"] == 1.0 and metrics["loss"] < math.log(2)
    assert metrics["margin"] == pytest.approx(metrics["chosen_reward"] - metrics["rejected_reward"])


def test_bad_settings_are_one_line_errors() -> None:
    with pytest.raises(ScratchLLMError, match="beta"):
        DPOLoss(0.0, reference="adapters_off")
    with pytest.raises(ScratchLLMError, match="label_smoothing"):
        DPOLoss(0.1, label_smoothing=0.5, reference="adapters_off")
    with pytest.raises(ScratchLLMError, match="reference model is needed"):
        DPOLoss(0.1)
    with pytest.raises(ScratchLLMError, match="no ref_logps"):
        DPOLoss(0.1, reference="precomputed")(tiny_model(), collate(PAIRS))
    assert F.logsigmoid(torch.tensor(0.0)).item() == pytest.approx(-math.log(2))
