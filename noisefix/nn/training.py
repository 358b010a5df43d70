"""One plain training loop: fit a model on (possibly noisy) labels until it memorizes them.

Knows nothing of the CLI, YAML or run directories: batches come from a `data.images.ImageSource`, progress goes to
an `on_epoch` callback, checkpoints to a `save` callback. The paper's stopping rule: stop when the running
training accuracy on the given labels reaches `target_acc`, or at the epoch cap.

Under torchrun (nn/distributed.py) the model is wrapped in DistributedDataParallel and `cfg.batch_size` is
the global batch: every rank shuffles the same order and trains on its share, ceil(batch_size / W) images per
step; loss and accuracy are summed over ranks, and rank 0 decides when to stop.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from noisefix.config import TrainConfig
from noisefix.data.images import ImageSource
from noisefix.data.splits import stratified_holdout
from noisefix.errors import TrainingError
from noisefix.nn import distributed
from noisefix.nn.device import channels_last, resolve_device, seed_everything, to_layout


@dataclass
class EvalSet:
    """Images scored after each epoch: `labels` int64 (M,) (clean test labels, or held-out labels)."""

    source: ImageSource
    labels: np.ndarray
    indices: np.ndarray | None = None


@dataclass
class EpochResult:
    epoch: int
    loss: float
    train_acc: float                      # running accuracy on the labels trained on
    train_clean_acc: float | None         # running accuracy on the clean labels, when known
    eval_acc: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        out = {"epoch": self.epoch, "loss": self.loss, "train_acc": self.train_acc}
        if self.train_clean_acc is not None:
            out["train_clean_acc"] = self.train_clean_acc
        out.update({f"{name}_acc": acc for name, acc in self.eval_acc.items()})
        out["seconds"] = self.seconds
        return out


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


@torch.no_grad()
def evaluate(model: nn.Module, ev: EvalSet, *, device: torch.device, batch_size: int = 512,
             autocast: bool = False) -> float:
    """Accuracy of `model` on an evaluation set (eval mode; restores the previous mode)."""
    was_training = model.training
    model.eval()
    correct = 0
    labels = torch.as_tensor(ev.labels)
    last = channels_last(model, device, ev.source.spec.size)
    for x, idx in ev.source.batches(batch_size, indices=ev.indices):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = model(_to_device(x, device, ev.source.to_input, last))
        correct += int((logits.argmax(1).cpu() == labels[idx]).sum())
    model.train(was_training)
    n = len(ev.labels) if ev.indices is None else len(ev.indices)
    return correct / max(1, n)


def _to_device(x: torch.Tensor, device: torch.device, to_input: Callable[[torch.Tensor], torch.Tensor],
               last: bool) -> torch.Tensor:
    """uint8 batch -> the model's float input on `device` (`to_input`: the source's spec normalization), in
    channels-last layout when `last` (`nn.device.channels_last`)."""
    return to_layout(to_input(x.to(device, non_blocking=True)), last)


def _epoch_batches(source: ImageSource, batch_size: int, indices: np.ndarray | None, seed: int):
    """One epoch's shuffled (x, idx) batches for this rank.

    Single process: `source.batches(batch_size, shuffle=True, seed=seed)`. W ranks: the same seeded permutation
    on every rank, padded cyclically to a multiple of W (a few images repeat), dealt in stride; every rank
    then has the same number of steps, and step k's W parts together form the k-th shuffled batch.
    """
    world = distributed.world_size()
    if world == 1:
        yield from source.batches(batch_size, indices=indices, shuffle=True, seed=seed)
        return
    order = np.arange(len(source)) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
    order = np.random.default_rng(seed).permutation(order)
    order = np.resize(order, len(order) + (-len(order)) % world)
    yield from source.batches(-(-batch_size // world), indices=order[distributed.rank()::world])


@dataclass
class _Step:
    """What one training pass needs besides the batches: the wrapped net, optimizer, loss and labels."""

    net: nn.Module                        # the model, DistributedDataParallel-wrapped under torchrun
    opt: torch.optim.Optimizer
    loss_fn: nn.Module
    labels: torch.Tensor                  # int64 (N,), indexed like the source
    clean: torch.Tensor | None            # int64 (N,) clean labels, when known
    device: torch.device
    autocast: bool
    to_input: Callable[[torch.Tensor], torch.Tensor]  # uint8 batch -> model input (the source's spec)
    channels_last: bool                   # batches in channels-last layout (nn.device.channels_last)


def _train_epoch(step: _Step, batches) -> tuple[float, int, int, int]:
    """One pass over `batches`: total loss, correct (given labels), correct (clean labels), images seen; summed
    over ranks under torchrun."""
    device = step.device
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    correct_clean = torch.zeros((), dtype=torch.long, device=device)
    seen = 0
    for x, idx in batches:
        xb = _to_device(x, device, step.to_input, step.channels_last)
        yb = step.labels[idx].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=step.autocast):
            logits = step.net(xb)
            loss = step.loss_fn(logits.float(), yb)
        step.opt.zero_grad(set_to_none=True)
        loss.backward()
        step.opt.step()
        pred = logits.detach().argmax(1)
        total_loss += loss.detach() * len(idx)
        correct += (pred == yb).sum()
        if step.clean is not None:
            correct_clean += (pred == step.clean[idx].to(device)).sum()
        seen += len(idx)
    if distributed.initialized():  # sums over ranks
        total_loss, correct, correct_clean, seen = distributed.all_reduce_sum(torch.stack(
            [total_loss.double(), correct.double(), correct_clean.double(),
             torch.tensor(seen, dtype=torch.float64, device=device)])).tolist()
    return float(total_loss), int(correct), int(correct_clean), seen


def train_model(
    model: nn.Module,
    source: ImageSource,
    labels: np.ndarray,
    cfg: TrainConfig,
    *,
    indices: np.ndarray | None = None,
    clean_labels: np.ndarray | None = None,
    eval_sets: dict[str, EvalSet] | None = None,
    on_epoch: Callable[[EpochResult], None] | None = None,
    save: Callable[[int, nn.Module], None] | None = None,
    stop: Callable[[list[EpochResult]], bool] | None = None,
    start_epoch: int = 0,
) -> list[EpochResult]:
    """Train `model` in place on `labels` (int64 (N,) indexed like `source`), restricted to `indices` if given.

    `save(epoch, model)` is called for epoch 0 (initial weights), for every epoch in `cfg.save_epochs`, every
    `cfg.save_every` epochs, and for the last epoch. `stop(history)` may end training early (e.g. patience
    on a held-out set). Returns the per-epoch history.
    """
    device = distributed.setup(resolve_device(cfg.device))
    gen = seed_everything(cfg.seed)
    model.to(device)
    last = channels_last(model, device, source.spec.size)
    if last:
        model.to(memory_format=torch.channels_last)
    net = distributed.data_parallel(model, device)  # `model` itself single-process
    autocast = cfg.bf16 and device.type == "cuda"
    step = _Step(net=net, opt=make_optimizer(model, cfg), loss_fn=nn.CrossEntropyLoss(),
                 labels=torch.as_tensor(labels, dtype=torch.long),
                 clean=torch.as_tensor(clean_labels, dtype=torch.long) if clean_labels is not None else None,
                 device=device, autocast=autocast, to_input=source.to_input, channels_last=last)
    if save is not None and start_epoch == 0:
        save(0, model)
    history: list[EpochResult] = []
    for epoch in range(start_epoch + 1, cfg.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        batches = _epoch_batches(source, cfg.batch_size, indices,
                                 seed=int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        total_loss, correct, correct_clean, seen = _train_epoch(step, batches)
        if not math.isfinite(total_loss):  # every rank sees the same summed loss, so all stop together
            raise TrainingError(f"training diverged in epoch {epoch}: the loss is {total_loss / seen} with "
                                f"learning rate {cfg.lr:g}; lower --lr (e.g. 10x smaller) and re-run")
        result = EpochResult(
            epoch=epoch,
            loss=total_loss / seen,
            train_acc=correct / seen,
            train_clean_acc=correct_clean / seen if step.clean is not None else None,
            eval_acc={name: evaluate(model, ev, device=device, autocast=autocast)
                      for name, ev in (eval_sets or {}).items()},
        )
        result.seconds = time.perf_counter() - t0
        history.append(result)
        done = result.train_acc >= cfg.target_acc or epoch == cfg.epochs or (stop is not None and stop(history))
        done = distributed.broadcast_object(done)  # rank 0's decision, so that every rank stops together
        if save is not None and (done or epoch in cfg.save_epochs
                                 or (cfg.save_every and epoch % cfg.save_every == 0)):
            save(epoch, model)
        if on_epoch is not None:
            on_epoch(result)
        if done:
            break
    return history


@dataclass
class _BestWeights:
    """The best epoch so far by held-out agreement, and a copy of its weights."""

    state: dict                           # the model's state_dict at `epoch` (deep copy)
    acc: float = -1.0                     # its held-out agreement
    epoch: int = 0                        # 0: the initial weights


def fit_with_holdout(model: torch.nn.Module, source: ImageSource, labels: np.ndarray, cfg: TrainConfig, *,
                     holdout: float, patience: int, seed: int, eval_sets: dict[str, EvalSet],
                     clean_labels: np.ndarray | None = None, on_epoch=None) -> tuple[list[EpochResult], int]:
    """Train on a stratified part of `labels`, stop on held-out agreement, restore the best epoch's weights.

    Returns the history and the best epoch. Used by retrain (and by benchmarks for a fair noisy baseline).
    """
    mask = stratified_holdout(labels, holdout, seed=seed)
    fit, held = np.flatnonzero(~mask), np.flatnonzero(mask)
    sets = {"holdout": EvalSet(source, labels, indices=held), **eval_sets}
    best = _BestWeights(state=copy.deepcopy(model.state_dict()))

    def stop(history: list[EpochResult]) -> bool:
        last = history[-1]
        if last.eval_acc["holdout"] > best.acc:
            best.acc, best.epoch, best.state = last.eval_acc["holdout"], last.epoch, copy.deepcopy(model.state_dict())
        return last.epoch - best.epoch >= patience

    history = train_model(model, source, labels, cfg, indices=fit, clean_labels=clean_labels, eval_sets=sets,
                          stop=stop, on_epoch=on_epoch)
    model.load_state_dict(best.state)
    return history, best.epoch
