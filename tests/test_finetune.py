"""Early stopping on dev (training/finetune.py), driven epoch by epoch with the trainer's own state."""
from __future__ import annotations

import pytest
import torch
from transformers import TrainerControl, TrainerState

from training.finetune import _callbacks, _keep_best


def drive(scores: list[float], min_delta: float) -> tuple[torch.nn.Linear, list, int]:
    """Run the early-stopping callback over epochs whose dev scores are `scores`; the model's weight is
    set to the epoch number before each evaluation. (model, history, epochs run)."""
    model = torch.nn.Linear(1, 1, bias=False)
    it = iter(scores)
    history: list = []
    (cb,) = _callbacks(None, model, lambda m: next(it), history, min_delta=min_delta)
    state, control = TrainerState(), TrainerControl()
    for epoch in range(1, len(scores) + 1):
        with torch.no_grad():
            model.weight.fill_(float(epoch))
        state.epoch, state.global_step = float(epoch), epoch * 10
        cb.on_epoch_end(None, state, control)
        if control.should_training_stop:
            break
    _keep_best(model, [cb], history)
    return model, history, epoch


@pytest.mark.parametrize("scores,min_delta,epochs_run,kept", [
    ([0.50, 0.52, 0.53], 0.005, 3, 3),   # every epoch gains more than min_delta: all run, the last kept
    ([0.50, 0.502, 0.60], 0.005, 2, 2),  # a gain below min_delta stops; that (still better) epoch is kept
    ([0.50, 0.49, 0.60], 0.005, 2, 1),   # a loss stops and restores the best epoch's weights
    ([0.50, 0.502, 0.60], 0.0, 3, 3),    # min_delta 0: only a loss stops
])
def test_early_stopping_stops_on_a_gain_below_min_delta_and_keeps_the_best_epoch(scores, min_delta, epochs_run, kept):
    model, history, ran = drive(scores, min_delta)
    assert ran == epochs_run
    assert [h["dev_ndcg@10"] for h in history if "epoch" in h and "step" in h] == scores[:epochs_run]
    assert model.weight.item() == kept
