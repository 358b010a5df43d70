"""The training health check of `clean`: did the short training learn anything the probes could use?

Three symptoms, each a plain sentence with what to try, from the run's per-epoch metrics and the probe rows
(checkpoint names as in probe/scores.json: "init" is the untrained network, "x" the raw input):
- the training loss barely moved: the last epoch's loss is within `MIN_LOSS_DROP` (relative) of ln K, the loss
  of a network that knows nothing (even at 80 % symmetric noise a learning network gets about 6 % below it);
- no trained checkpoint's best held-out agreement beats the untrained network's;
- the pick is the untrained network or the raw input (the training added nothing the pick could see).
With `pretrained` starting weights, checkpoint "init" is the pretrained network: the sentences say so and do
not suggest --weights (they were given); a pick there means fine-tuning added nothing, and the training-free
`probe DATA --model M --weights W` reaches it without training.
"""

from __future__ import annotations

import math
from typing import Any

MIN_LOSS_DROP = 0.02  # relative drop below ln K under which the training loss "barely moved"
UNTRAINED = "init"
RAW_INPUT = "x"


def _best_by_checkpoint(rows: list[dict[str, Any]], criterion: str) -> dict[str, float]:
    best: dict[str, float] = {}
    for r in rows:
        value = r.get(criterion)
        if value is not None and r["layer"] != RAW_INPUT:
            best[r["checkpoint"]] = max(best.get(r["checkpoint"], float("-inf")), float(value))
    return best


def check_health(metrics: list[dict[str, Any]], rows: list[dict[str, Any]], best: dict[str, Any], *,
                 criterion: str, num_classes: int, pretrained: bool = False) -> list[str]:
    """Warnings (empty when healthy) from the epochs' metrics (dicts with "loss"), the probe rows and the pick;
    `pretrained`: the run started from given weights (module docstring)."""
    warnings = []
    start = "the pretrained network" if pretrained else "the untrained network"
    or_weights = "" if pretrained else ", or --weights"
    losses = [float(m["loss"]) for m in metrics if m.get("loss") is not None]
    chance = math.log(num_classes)
    if losses and not losses[-1] < chance * (1 - MIN_LOSS_DROP):
        warnings.append(f"the training loss barely moved ({losses[0]:.4f} -> {losses[-1]:.4f}, chance ln K = "
                        f"{chance:.4f}): the network learned little; try a larger --lr, --optimizer adam, more "
                        f"--epochs{or_weights}")
    per_ckpt = _best_by_checkpoint(rows, criterion)
    trained = {c: v for c, v in per_ckpt.items() if c != UNTRAINED}
    if UNTRAINED in per_ckpt and trained and max(trained.values()) <= per_ckpt[UNTRAINED]:
        warnings.append(f"no trained checkpoint agrees with the labels better than {start} "
                        f"({max(trained.values()):.1%} vs {per_ckpt[UNTRAINED]:.1%} {criterion}); "
                        "try a larger --lr or more --epochs")
    if best.get("checkpoint") == UNTRAINED or best.get("layer") == RAW_INPUT:
        where = "the raw input" if best.get("layer") == RAW_INPUT else start
        hint = ("the training-free `noisefix probe DATA --model M --weights W` reaches it without training"
                if pretrained and where == start else f"try more --epochs, a larger --lr{or_weights}")
        warnings.append(f"the pick ({best['layer']}/{best['probe']} at {best['checkpoint']}) is {where}: training "
                        f"added nothing the probes could use; {hint}")
    return warnings
