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
from bench.data.pipeline import DataWait
from bench.errors import BenchError
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
        own = None if loss is None else float(loss.detach())
        self.calls.append((list(params), count, own, [p.grad is not None for p in params]))
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


def test_fit_loop_trains_in_order_and_reports_each_epoch(bars):
    probe, train, run = Probe(), Train(2, PAIRS), ctx(progress=True)
    losses = training.fit_loop(probe, train, run)
    expected, w = sgd_by_hand(PAIRS * 2)
    assert losses == pytest.approx(expected, rel=1e-6)
    assert probe.w == pytest.approx(w, rel=1e-6)
    assert [s["index"] for s in probe.steps] == PAIRS * 2
    assert all(s["training"] and not s["autocast"] for s in probe.steps)
    assert probe.calls[:3] == [
        ("transforms", True),
        ("scheduler", True, 2, 2),  # 4 samples in batches of 2: 2 steps per epoch
        ("train_mode", True),
    ]
    assert probe.calls[-1] == ("train_mode", False)
    assert train.loaders == [
        {"chain": "chain(train=True)", "train": True, "shuffle": True, "epoch": e, "part": False}
        | {"skip": 0}
        for e in (0, 1)
    ]
    assert [(b["total"], b["desc"], b["disable"]) for b in bars] == [
        (2, "train 1/2", False),
        (2, "train 2/2", False),
    ]
    mean0, mean1 = sum(expected[:2]) / 2, sum(expected[2:]) / 2
    assert run.logs[:2] == [
        f"epoch 1/2: mean loss {mean0:.4f}",
        f"epoch 2/2: mean loss {mean1:.4f}",
    ]
    assert (
        run.logs[2].startswith("data wait (train): ")
        and "(4 batches, 3 loader workers)" in (run.logs[2])
    )
    assert set(run.notes["data_wait"]) == {"train"}


def test_steps_per_epoch_round_up_and_are_never_zero(bars):
    probe = Probe()
    training.fit_loop(probe, Train(1, [[0, 1, 2], [3]], batch_size=3), ctx())
    assert probe.calls[1] == ("scheduler", True, 2, 1)  # ceil(4 / 3)
    assert bars[0]["disable"] is True  # no progress asked for
    probe = Probe()
    training.fit_loop(probe, Train(1, [[0]], n=1, batch_size=4), ctx())
    assert probe.calls[1] == ("scheduler", True, 1, 1)  # ceil(1 / 4) = 1


def test_the_epoch_log_averages_the_last_epochs_losses(bars):
    """3 batches of 1 and 1 epoch: the mean over its 3 steps (not 2, not the first 1)."""
    probe, run = Probe(), ctx()
    training.fit_loop(probe, Train(1, [[0], [1], [2]], n=3, batch_size=1), run)
    expected, _ = sgd_by_hand([[0], [1], [2]])
    assert run.logs[0] == f"epoch 1/1: mean loss {sum(expected) / 3:.4f}"


def test_the_batches_go_to_the_runs_device(bars):
    """ctx.device "meta": fit_loop moves image, label and features there, nothing else."""
    probe = Probe()
    training.fit_loop(probe, Train(1, PAIRS), ctx(device="meta"))
    assert [s["device"] for s in probe.steps] == ["meta", "meta"]
    batch = batch_of([0, 1]) | {"features": torch.ones(2, 3), "mask": torch.ones(2)}
    moved = training.to_device(batch, "meta")
    assert {k: v.device.type for k, v in moved.items() if torch.is_tensor(v)} == {
        "image": "meta",
        "label": "meta",
        "features": "meta",
        "mask": "cpu",
    }
    assert moved["path"] == ["p0", "p1"] and batch["image"].device.type == "cpu"


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


def test_a_nan_first_loss_stops_the_run_at_once(bars):
    probe = Probe(nan_at={1})
    with pytest.raises(BenchError, match=r"^training diverged at the first step: loss is nan$"):
        training.fit_loop(probe, Train(2, PAIRS), ctx())
    assert len(probe.steps) == 1
    assert probe.calls[-1] == ("train_mode", False)  # switched off on the way out too


@pytest.mark.parametrize(
    ("nan_at", "read_every", "steps_run"),
    [
        ({3}, 25, 4),  # read at the end of epoch 2 (steps 3-4)
        ({5}, 2, 5),  # read as due after step 5 (epoch 2 is steps 4-6): steps 4-5 pending
    ],
)
def test_a_later_nan_names_its_epoch(bars, monkeypatch, nan_at, read_every, steps_run):
    monkeypatch.setattr(training, "READ_EVERY", read_every)
    probe = Probe(nan_at=nan_at)
    batches = PAIRS if read_every == 25 else [[0], [1], [2]]
    with pytest.raises(BenchError, match=r"^training diverged: loss is nan at epoch 2$"):
        training.fit_loop(probe, Train(3, batches, batch_size=len(batches[0])), ctx())
    assert len(probe.steps) == steps_run


def test_a_nan_read_for_a_checkpoint_names_its_epoch(bars):
    probe, points = Probe(nan_at={4}), Checkpoints(every=2)
    train = Train(2, [[0], [1], [2]], n=3, batch_size=1)
    with pytest.raises(BenchError, match=r"^training diverged: loss is nan at epoch 2$"):
        training.fit_loop(probe, train, ctx(checkpoints=points))
    assert len(probe.steps) == 4  # global step 4 is epoch 2's first: a checkpoint is due
    assert [(s["epoch"], s["batch"]) for s in points.saves] == [(0, 2), (1, 0)]


def test_checkpoints_mid_epoch_and_at_every_epoch_end(bars):
    """3 steps per epoch, every 2 steps: saves at global steps 2 and 4, never at an
    epoch's last step (its end-of-epoch save covers it), and one per epoch end."""
    probe, points = Probe(scheduler="halving"), Checkpoints(every=2)
    batches = [[0], [1], [2]]
    losses = training.fit_loop(probe, Train(2, batches, n=3, batch_size=1), ctx(checkpoints=points))
    expected, _ = sgd_by_hand_halving(batches * 2)
    objects = (probe, probe.optimizer, probe.scheduler)
    assert points.restored == objects
    assert points.asked == [1, 2, 4, 5]  # the steps that are not an epoch's last
    assert [(s["epoch"], s["batch"]) for s in points.saves] == [(0, 2), (1, 0), (1, 1), (2, 0)]
    assert [len(s["losses"]) for s in points.saves] == [2, 3, 4, 6]
    assert points.saves[0]["losses"] == pytest.approx(expected[:2], rel=1e-6)
    assert all(s["objects"] == objects for s in points.saves)
    assert losses == pytest.approx(expected, rel=1e-6)


def test_a_restored_run_goes_on_from_its_epoch_and_batch(bars):
    """Saved after epoch 2's first batch (of 2): epoch 2 skips 1 batch, epoch 3 none."""
    saved = {"epoch": 1, "batch": 1, "losses": [9.0, 8.0, 7.0]}
    probe, points = Probe(scheduler="halving"), Checkpoints(saved=saved)
    train = Train(3, PAIRS)
    losses = training.fit_loop(probe, train, ctx(checkpoints=points))
    assert points.restored == (probe, probe.optimizer, probe.scheduler)
    assert [(d["epoch"], d["skip"]) for d in train.loaders] == [(1, 1), (2, 0)]
    assert [s["index"] for s in probe.steps] == [[2, 3], [0, 1], [2, 3]]
    assert losses[:3] == [9.0, 8.0, 7.0] and len(losses) == 6
    assert [(s["epoch"], s["batch"]) for s in points.saves] == [(2, 0), (3, 0)]
    assert points.saves[0]["objects"] == (probe, probe.optimizer, probe.scheduler)


def test_several_processes_average_each_step_and_join_empty_ones(bars):
    """Process 1 of 2: loaders give its part; where its part had no readable image it
    still joins the step with count 0 (the others' loss is the step's)."""
    probe, processes = Probe(scheduler="halving"), Several()
    train = Train(1, [[0], [1], [2]], n=3, batch_size=1)
    train.no_image = {(0, 1)}
    seen: list[tuple] = []
    run = ctx(processes=processes, track=lambda values, step: seen.append((values, step)))
    losses = training.fit_loop(probe, train, run)
    assert [d["part"] for d in train.loaders] == [True]
    params = list(probe.line.parameters())
    assert [(c[0], c[1]) for c in processes.calls] == [(params, 1), (params, 0), (params, 1)]
    # its own loss (step 1: (0 - 1)^2; step 3: (3 w - 1)^2 at w = 2 LR / 3), none when empty
    own = [c[2] for c in processes.calls]
    assert own[0] == 1.0 and own[1] is None and own[2] == pytest.approx((2 * LR - 1) ** 2)
    # the empty step's part starts from no gradient (set to None, not zeroed): a parameter
    # no process has a gradient for then stays out of the step
    assert [c[3] for c in processes.calls] == [[True], [False], [True]]
    assert [v["train/lr"] for v, _ in seen[:3]] == pytest.approx([LR, LR / 2, LR / 4])
    assert losses == [0.25, 0.25, 0.25]
    # lr halves after each of the 3 steps: the empty step stepped the scheduler too
    assert probe.optimizer.param_groups[0]["lr"] == pytest.approx(LR / 8)
    # step 1: w x = 0, y = 1: grad -2, scaled 1/3; step 2: grad None (joined, no step on w);
    # step 3 at lr/4: w = 2 LR / 3, x = 3, y = 1: grad 2 (3 w - 1) 3, scaled 1/3.
    w = LR * 2 / 3
    w -= LR / 4 * (2 * (3 * w - 1) * 3) / 3
    assert probe.w == pytest.approx(w, rel=1e-6)


def test_a_step_no_process_could_read_is_skipped(bars):
    probe, processes = Probe(scheduler="halving"), Several(others_have_images=False)
    train = Train(1, [[0], [1]], n=2, batch_size=1)
    train.no_image = {(0, 0)}
    losses = training.fit_loop(probe, train, ctx(processes=processes))
    assert len(losses) == 1 and [c[1] for c in processes.calls] == [0, 1]
    assert probe.optimizer.param_groups[0]["lr"] == pytest.approx(LR / 2)  # one real step


def test_one_process_skips_a_batch_without_images(bars):
    probe, train = Probe(), Train(1, PAIRS)
    train.no_image = {(0, 0)}
    losses = training.fit_loop(probe, train, ctx())
    expected, _ = sgd_by_hand([[2, 3]])
    assert losses == pytest.approx(expected, rel=1e-6)


# ----------------------------------------------------------------------- one step


def test_step_sets_unused_gradients_to_none():
    """With weight decay, a zeroed gradient would still shrink a parameter no loss used;
    set_to_none leaves it out of the step, as a fresh optimiser would."""
    a = torch.nn.Parameter(torch.tensor(2.0))
    b = torch.nn.Parameter(torch.tensor(3.0))
    optimizer = torch.optim.SGD([a, b], lr=0.1, weight_decay=0.5)

    class Two:
        def training_step(self, batch):
            return a * 1.0 if batch["use"] == "a" else b * 1.0

    loss = training.step(Two(), {"use": "a"}, optimizer, None, ctx())
    assert float(loss) == 2.0 and not loss.requires_grad
    assert a.item() == pytest.approx(2.0 - 0.1 * (1.0 + 0.5 * 2.0))
    training.step(Two(), {"use": "b"}, optimizer, None, ctx())
    assert a.item() == pytest.approx(1.8)  # untouched by the second step
    assert b.item() == pytest.approx(3.0 - 0.1 * (1.0 + 0.5 * 3.0))


def test_autocast_follows_the_runs_precision():
    line = torch.nn.Linear(1, 1)
    for amp, dtype in ((None, torch.float32), (torch.float16, torch.float16)):
        with training.autocast(ctx(amp_dtype=amp)):
            assert line(torch.ones(1, 1)).dtype == dtype
    probe = Probe()
    optimizer = probe.configure_optimizer()
    training.step(probe, batch_of([0, 1]), optimizer, None, ctx(amp_dtype=torch.float16))
    assert probe.steps[0]["autocast"] and probe.steps[0]["dtype"] == torch.float16


def test_train_step_reads_its_loss_at_once():
    probe = Probe(nan_at={2}, scheduler="halving")
    optimizer = probe.configure_optimizer()
    scheduler = probe.configure_scheduler(optimizer, 1, 1)
    loss = training.train_step(probe, batch_of([0, 1]), optimizer, scheduler, ctx(), 0)
    expected, w = sgd_by_hand([[0, 1]])
    assert loss == pytest.approx(expected[0], rel=1e-6) and probe.w == pytest.approx(w)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(LR / 2)
    with pytest.raises(BenchError, match=r"^training diverged: loss is nan at epoch 4$"):
        training.train_step(probe, batch_of([2, 3]), optimizer, scheduler, ctx(), 3)


def test_parameters_lists_every_group_in_order():
    a, b, c = (torch.nn.Parameter(torch.zeros(1)) for _ in range(3))
    optimizer = torch.optim.SGD([{"params": [a, b]}, {"params": [c], "lr": 0.5}], lr=0.1)
    assert training.parameters(optimizer) == [a, b, c]


# ------------------------------------------------------------ reading and checking losses


def test_read_losses_reads_and_empties_the_pending_list():
    pending = [torch.tensor(0.5), torch.tensor([0.25], dtype=torch.bfloat16)]
    assert training.read_losses(pending, 0) == [0.5, 0.25] and pending == []
    assert training.read_losses([], 0) == []
    with pytest.raises(BenchError, match=r"^training diverged: loss is inf at epoch 3$"):
        training.read_losses([torch.tensor(1.0), torch.tensor(math.inf)], 2)
    with pytest.raises(BenchError, match=r"^training diverged: loss is nan at epoch 1$"):
        training.read_losses([torch.tensor(math.nan)], 0)  # first=False by default
    with pytest.raises(BenchError, match=r"^training diverged at the first step: loss is -inf$"):
        training.read_losses([torch.tensor(-math.inf), torch.tensor(1.0)], 0, first=True)


def test_mean_tail():
    assert training.mean_tail([1.0, 2.0, 3.0, 6.0], 2) == 4.5
    assert training.mean_tail([1.0, 2.0], 5) == 1.5
    assert math.isnan(training.mean_tail([], 3))


def test_check_losses_looks_at_the_first_loss():
    training.check_losses([])
    training.check_losses([1.0, math.nan])  # a later NaN was caught where it was read
    with pytest.raises(BenchError, match=r"^training diverged at the first step: loss is nan$"):
        training.check_losses([math.nan, 1.0])


class _Sample:
    def __init__(self, path: str):
        self.path = path


class _ReadLog:
    def __init__(self, unreadable: set[str]):
        self.unreadable = unreadable

    def among(self, paths: set[str]) -> dict[str, str]:
        return {p: "broken" for p in self.unreadable if p in paths}


def test_no_training_image_fails_only_when_every_one_failed():
    samples = [_Sample("a"), _Sample("b"), _Sample("a")]
    training.no_training_image(_ReadLog({"a"}), samples)
    training.no_training_image(_ReadLog(set()), [])  # nothing to train on is not this error
    with pytest.raises(
        BenchError,
        match=r"^no training image could be read \(all 2 are listed in skipped.txt\)$",
    ):
        training.no_training_image(_ReadLog({"a", "b", "c"}), samples)


# --------------------------------------------------------------------- data wait


def test_record_wait_logs_notes_and_tracks_the_share():
    wait = DataWait()
    seen: list[tuple] = []
    run = ctx(track=lambda values, step: seen.append((values, step)))
    training.record_wait(run, wait, "train")  # no batch: nothing to say
    assert run.logs == [] and run.notes == {} and seen == []
    wait.batches, wait.waited, wait._start, wait._end = 1, 0.123456, 10.0, 11.0
    training.record_wait(run, wait, "train")
    assert run.logs == [
        "data wait (train): 12% of 1.0 s spent waiting for batches (1 batches, 3 loader workers)"
    ]
    assert run.notes == {"data_wait": {"train": 0.1235}}
    assert seen == [({"train/data_wait_share": pytest.approx(0.123456)}, None)]
