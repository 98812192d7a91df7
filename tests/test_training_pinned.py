"""Issue 17 (mutation testing): the standard training loop (``bench.training``), pinned.

A one-weight model (``nn.Linear(1, 1)`` without bias, weight 0) learns y from x on 4
samples with plain SGD; the expected losses and weights come from the update written out
in the test (w <- w - lr * mean(2 (w x - y) x)), never from the loop under test. The loader,
the processes, the checkpoints and the progress bar are small recording fakes, so the
loop's every call (which epoch, which batch, which step) is checked without images.
"""

from __future__ import annotations

import math

import pytest
import torch

from bench import training
from bench.interfaces import RunContext

# x and y of the 4 samples; batches are consecutive pairs unless a test says otherwise
XS = [1.0, 2.0, 3.0, 4.0]
YS = [1.0, 0.0, 1.0, 1.0]
LR = 0.05


def sgd_by_hand(batches: list[list[int]], w: float = 0.0, lr: float = LR):
    """The losses (before each step) and the weight after them, worked out in floats."""
    losses = []
    for idx in batches:
        xs, ys = [XS[i] for i in idx], [YS[i] for i in idx]
        losses.append(sum((w * x - y) ** 2 for x, y in zip(xs, ys, strict=True)) / len(idx))
        grad = sum(2 * (w * x - y) * x for x, y in zip(xs, ys, strict=True)) / len(idx)
        w -= lr * grad
    return losses, w


class Probe:
    """A detector as fit_loop sees it, recording what the loop asks of it."""

    def __init__(self, nan_at: set[int] | None = None, scheduler: str | None = None):
        torch.manual_seed(0)
        self.line = torch.nn.Linear(1, 1, bias=False)
        torch.nn.init.zeros_(self.line.weight)
        self.nan_at = nan_at or set()  # 1-based steps whose loss is NaN
        self.scheduler_kind = scheduler
        self.calls: list = []
        self.steps: list[dict] = []

    # --- the Detector methods fit_loop uses
    def configure_optimizer(self):
        self.optimizer = torch.optim.SGD(self.line.parameters(), lr=LR)
        return self.optimizer

    def transforms(self, train: bool):
        self.calls.append(("transforms", train))
        return f"chain(train={train})"

    def configure_scheduler(self, optimizer, steps_per_epoch, epochs):
        self.calls.append(("scheduler", optimizer is self.optimizer, steps_per_epoch, epochs))
        if self.scheduler_kind == "halving":
            self.scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1, gamma=0.5)
            return self.scheduler
        return None

    def train_mode(self, on: bool) -> None:
        self.calls.append(("train_mode", on))
        self.line.train(on)

    def training_step(self, batch):
        idx = batch["index"]
        self.steps.append(
            {
                "index": list(idx),
                "device": batch["image"].device.type,
                "training": self.line.training,
                "autocast": torch.is_autocast_enabled("cpu"),
            }
        )
        x = torch.tensor([[XS[i]] for i in idx])
        y = torch.tensor([YS[i] for i in idx])
        out = self.line(x)
        self.steps[-1]["dtype"] = out.dtype
        loss = ((out.float().squeeze(1) - y) ** 2).mean()
        if len(self.steps) in self.nan_at:
            loss = loss * math.nan
        return loss

    @property
    def w(self) -> float:
        return float(self.line.weight.detach())


def batch_of(idx: list[int], image: bool = True) -> dict:
    return {
        "image": torch.tensor([[XS[i]] for i in idx]) if image else None,
        "label": torch.tensor([YS[i] for i in idx]),
        "path": [f"p{i}" for i in idx],
        "index": idx,
    }


class Train:
    """TrainData's shape: samples, batch size, epochs and a loader over given batches."""

    def __init__(self, epochs: int, batches: list[list[int]], n: int = 4, batch_size: int = 2):
        self.samples = [f"s{i}" for i in range(n)]
        self.batch_size = batch_size
        self.epochs = epochs
        self.batches = batches
        self.loaders: list[dict] = []
        self.no_image: set[tuple[int, int]] = set()  # (epoch, batch) with no readable image

    def loader(self, chain, **kwargs):
        self.loaders.append({"chain": chain, **kwargs})
        epoch, skip = kwargs["epoch"], kwargs.get("skip", 0)
        return [
            batch_of(b, image=(epoch, k) not in self.no_image)
            for k, b in enumerate(self.batches)
            if k >= skip
        ]


class Bar:
    """tqdm as fit_loop calls it: the arguments and every postfix."""

    made: list[dict] = []

    def __init__(self, iterable, **kwargs):
        self.iterable = iterable
        self.postfix: list[dict] = []
        Bar.made.append({**kwargs, "postfix": self.postfix})

    def __iter__(self):
        return iter(self.iterable)

    def set_postfix(self, **kwargs):
        self.postfix.append(kwargs)


@pytest.fixture
def bars(monkeypatch):
    import tqdm

    Bar.made = []
    monkeypatch.setattr(tqdm, "tqdm", Bar)
    return Bar.made


class Checkpoints:
    """bench.checkpoint.Checkpoints' interface: a saved state to go on from, and every save."""

    def __init__(self, saved: dict | None = None, every: int | None = None):
        self.saved = saved
        self.every = every
        self.restored: tuple | None = None
        self.asked: list[int] = []
        self.saves: list[dict] = []

    def restore(self, detector, optimizer, scheduler):
        self.restored = (detector, optimizer, scheduler)
        return self.saved

    def due(self, step: int) -> bool:
        self.asked.append(step)
        return bool(self.every) and step % self.every == 0

    def save(self, detector, optimizer, scheduler, *, epoch, batch, losses):
        self.saves.append(
            {
                "objects": (detector, optimizer, scheduler),
                "epoch": epoch,
                "batch": batch,
                "losses": list(losses),
            }
        )


class Several:
    """Two processes as the loop sees them; the other one's gradient is taken to be zero."""

    several = True

    def __init__(self, others_have_images: bool = True):
        self.others = others_have_images
        self.calls: list[tuple] = []

    def average_gradients(self, params, count, loss):
        self.calls.append((list(params), count, None if loss is None else float(loss.detach())))
        total = count + (2 if self.others else 0)
        if total == 0:
            return None
        for p in params:
            if p.grad is not None:
                p.grad = p.grad * (count / total)
        return torch.tensor(0.25)  # "the whole batch's mean loss"


def ctx(**kw) -> RunContext:
    logs: list[str] = []
    base = RunContext(**{"device": "cpu", "seed": 0, "workers": 3, "log": logs.append, **kw})
    base.logs = logs  # type: ignore[attr-defined]
    return base


PAIRS = [[0, 1], [2, 3]]


# ------------------------------------------------------------------------ fit_loop


def test_losses_are_read_every_read_every_steps(bars, monkeypatch):
    """READ_EVERY 2: the first loss at once, then groups of 2, and the epoch's rest."""
    monkeypatch.setattr(training, "READ_EVERY", 2)
    batches = [[0], [1], [2], [3]]
    seen: list[tuple] = []
    run = ctx(progress=True, track=lambda values, step: seen.append((dict(values), step)))
    probe = Probe(scheduler="halving")
    losses = training.fit_loop(probe, Train(2, batches, batch_size=1), run)
    expected, _ = sgd_by_hand_halving(batches * 2)
    assert losses == pytest.approx(expected, rel=1e-6)
    # reads: step 1 at once; steps 2-3 (due); step 4 (epoch end); 5-6 (due); 7-8 (due).
    assert [b["postfix"] for b in bars] == [
        [{"loss": f"{expected[2]:.4f}"}],
        [{"loss": f"{expected[5]:.4f}"}, {"loss": f"{expected[7]:.4f}"}],
    ]
    rates = [LR * 0.5**k for k in range(8)]
    steps = [(values["train/loss"], values["train/lr"], step) for values, step in seen[:-1]]
    assert [s[2] for s in steps] == list(range(1, 9))
    assert [s[1] for s in steps] == pytest.approx(rates)
    assert [s[0] for s in steps] == pytest.approx(expected, rel=1e-6)
    assert list(seen[-1][0]) == ["train/data_wait_share"] and seen[-1][1] is None


def sgd_by_hand_halving(batches: list[list[int]]):
    """As sgd_by_hand, with the learning rate halved after every step (StepLR(1, 0.5))."""
    losses, w = [], 0.0
    for k, idx in enumerate(batches):
        step_losses, w = sgd_by_hand([idx], w, lr=LR * 0.5**k)
        losses += step_losses
    return losses, w
