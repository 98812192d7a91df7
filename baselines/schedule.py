"""UnivFD's official schedule: validate each epoch, stop early, divide the lr on plateaus.

From WisconsinAIVision/UniversalFakeDetect ``train.py`` (its ``earlystop.py`` is
CNNDetection's) and ``networks/trainer.py``:
  - after every epoch, accuracy at 0.5 on a validation set;
  - ``EarlyStopping(patience=5, delta=-0.001)``: an epoch improves when its accuracy is at
    least the best so far + 0.001; then the model is saved as "best". Five epochs without
    improvement divide the lr by 10 (``adjust_learning_rate``) and start a new stopper
    with delta −0.002 (its first epoch always saves); when the divided lr falls below
    1e-6, training stops;
  - at most ``niter`` = 100 epochs.
The model kept is the one the last stopper saved as best, and its epoch is recorded.
(``train.py`` also writes ``model_epoch_best.pth`` after every epoch, before validating:
despite its name that file is the last epoch's model.)

The validation set (``val_set``): "auto" is a ``val`` folder beside the training folder
when there is one (AIGIBench ships ``train/`` and ``val/``), else ``val_fraction`` of the
training set held out per (generator, class) with a fixed seed; "split" always holds out;
anything else is a path read like ``--test``. UnivFD validates on resized (256), centre-
cropped images with blur σ = 1.5 and JPEG quality 65 (the midpoints of the training
ranges) at the training probabilities; here each validation image's draw is fixed by its
seed, so the validation set is one fixed view, computed once and cached.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import BenchError

if TYPE_CHECKING:
    import torch

    from bench.interfaces import RunContext, TransformChain

PATIENCE = 5
FIRST_DELTA = 0.001
LATER_DELTA = 0.002
MIN_LR = 1e-6


@dataclass
class Stopper:
    """CNNDetection's EarlyStopping on accuracy: improve by ``delta`` or count to patience."""

    patience: int = PATIENCE
    delta: float = FIRST_DELTA
    best: float | None = None
    counter: int = 0

    def step(self, score: float) -> tuple[bool, bool]:
        """(this epoch is saved as the best, patience ran out)."""
        if self.best is None or score >= self.best + self.delta:
            self.best, self.counter = score, 0
            return True, False
        self.counter += 1
        return False, self.counter >= self.patience


@dataclass
class OfficialSchedule:
    """The state of UnivFD's schedule across epochs; ``after_epoch`` says what to do next."""

    patience: int = PATIENCE
    min_lr: float = MIN_LR
    stopper: Stopper = field(default_factory=Stopper)
    best_epoch: int | None = None
    best_state: dict[str, Any] | None = None
    history: list[dict[str, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.stopper = Stopper(self.patience, FIRST_DELTA)

    def after_epoch(self, epoch: int, accuracy: float, optimizer: Any, state: dict) -> bool:
        """Record the epoch; divide the lr on a plateau. True: train another epoch."""
        lr = float(optimizer.param_groups[0]["lr"])
        self.history.append({"epoch": epoch + 1, "val_acc": round(accuracy, 6), "lr": lr})
        saved, plateau = self.stopper.step(accuracy)
        if saved:
            self.best_epoch = epoch
            self.best_state = {k: v.detach().clone() for k, v in state.items()}
        if not plateau:
            return True
        below = False
        for group in optimizer.param_groups:
            group["lr"] /= 10.0
            below = below or group["lr"] < self.min_lr
        if below:
            return False
        self.stopper = Stopper(self.patience, LATER_DELTA)
        return True

    def record(self) -> dict[str, Any]:
        return {
            "schedule": "official (UnivFD train.py)",
            "epochs_run": len(self.history),
            "chosen_epoch": None if self.best_epoch is None else self.best_epoch + 1,
            "history": self.history,
        }


def validation_split(
    samples: list[Any], root: str | None, val_set: str, fraction: float, seed: int
) -> tuple[list[Any], list[Any], str]:
    """(training samples, validation samples, where the validation set came from)."""
    from bench.data.layouts import read_dataset

    sibling = _sibling_val(root)
    if val_set not in ("auto", "split"):
        return samples, read_dataset(val_set, split="val"), val_set
    if val_set == "auto" and sibling is not None:
        return samples, read_dataset(str(sibling), split="val"), str(sibling)
    groups: dict[tuple[str, int], list[Any]] = {}
    for sample in samples:
        groups.setdefault((sample.generator, sample.label), []).append(sample)
    held: set[str] = set()
    for (generator, label), group in sorted(groups.items()):
        k = round(fraction * len(group))
        if k and k < len(group):
            rng = random.Random(f"{seed}:val:{generator}:{label}")
            held.update(s.path for s in rng.sample(group, k))
    if not held:
        raise BenchError(
            f"the training set is too small to hold out val_fraction={fraction} for validation"
        )
    train = [s for s in samples if s.path not in held]
    val = [s for s in samples if s.path in held]
    return train, val, f"{fraction:g} of the training set, per generator and class"


def _sibling_val(root: str | None) -> Path | None:
    if not root:
        return None
    path = Path(root).expanduser().resolve()
    if path.is_dir() and path.name.lower() == "train":
        candidate = path.parent / "val"
        if candidate.is_dir():
            return candidate
    return None


# --------------------------------------------------------------------------- validation
def validation_transforms(detector: Any) -> TransformChain:
    """UnivFD's validation input for a frozen-CLIP detector: shorter side to load_size,
    blur σ and JPEG quality at the midpoints of the training ranges (at the training
    probabilities), centre crop, CLIP normalisation."""
    from baselines.augment import BlurJpeg, ResizeShorter
    from bench.builtin.transforms import CenterCrop, ToTensor
    from bench.interfaces import TransformChain

    o = detector.options
    sigma = tuple(o.get("blur_sigma", (0.0, 3.0)))
    quality = tuple(o.get("jpeg_quality", (30, 100)))
    mid_sigma, mid_quality = (sigma[0] + sigma[1]) / 2, int((quality[0] + quality[1]) / 2)
    return TransformChain(
        [
            ResizeShorter(int(o.get("load_size", 256))),
            BlurJpeg(
                blur_p=float(o.get("blur_p", 0.5)),
                sigma=(mid_sigma, mid_sigma),
                jpeg_p=float(o.get("jpeg_p", 0.5)),
                quality=(mid_quality, mid_quality),
            ),
            CenterCrop(detector.input_size),
            ToTensor(*detector.normalization),
        ]
    )


def validation_features(
    detector: Any, samples: list[Any], ctx: RunContext
) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, labels) of the readable validation images, through the feature cache."""
    import torch

    from baselines.feature_cache import cached_features, image_digests

    feats, found, computed = cached_features(
        samples,
        image_digests(samples),
        validation_transforms(detector),
        detector._encode_for_cache,
        key=detector.feature_key(ctx),
        train=True,  # the blur / JPEG draw is fixed by each image's seed
        view=0,
        batch_size=int(detector.options.get("eval_batch_size", 256)),
        ctx=ctx,
    )
    if feats is None or not bool(found.any()):
        raise BenchError(f"{detector.name}: no validation image could be read")
    labels = torch.tensor([float(s.label) for s in samples])
    ctx.log(f"{detector.name}: validation features: {computed} computed, rest from the cache")
    return feats[found], labels[found]


def validation_accuracy(detector: Any, feats: torch.Tensor, labels: torch.Tensor) -> float:
    """Accuracy at 0.5, as UnivFD's ``validate`` computes it, in evaluation mode."""
    import torch

    detector.train_mode(False)
    try:
        correct = 0
        with torch.no_grad():
            for start in range(0, len(labels), 4096):
                f = feats[start : start + 4096].to(detector.device)
                p = detector.head_proba(detector.apply_feature_hooks(f, None)).float().cpu()
                correct += int(((p > 0.5).float() == labels[start : start + 4096]).sum())
    finally:
        detector.train_mode(True)
    return correct / len(labels)
