"""Detector, Transform, Addon and Perturbation: the kinds of component a plugin contributes.

The contracts live here and nowhere else, so an outside detector and a built-in one are
written the same way. This module imports no torch at run time: the registry and the CLI
import it to check capabilities without paying for torch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from bench.errors import BenchError

if TYPE_CHECKING:
    import torch
    from torch.utils.data import DataLoader

    from bench.data.layouts import Sample

#: OpenAI CLIP's normalisation, used by every CLIP-based detector.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Capabilities a detector may declare in ``Detector.provides``.
#: - "features": ``extract_features`` exists and the head reads ``apply_feature_hooks(f)``.
#: - "clip-text": ``encode_text(list[str]) -> (n, d)`` in the same space as the features.
CAPABILITIES = ("features", "clip-text")

#: A batch as the runner hands it over: "image" (N, C, H, W) float tensor on the run's
#: device, "label" (N,) float tensor (1 = fake), "path" and "generator" lists of str.
Batch = dict[str, Any]


@dataclass
class RunContext:
    """What a component may know about the run it is part of."""

    device: str = "cpu"
    #: torch dtype for autocast (bf16 on CUDA), or None for full precision.
    amp_dtype: Any = None
    seed: int = 0
    workers: int = 0
    progress: bool = False
    #: Folder of this run (OUT/runs/<id>) and the cache root for derived data.
    run_dir: Path | None = None
    cache_dir: Path | None = None
    #: Per-image text from caption sidecars (``captions.json`` at a data root): abs path -> text.
    captions: dict[str, str] = field(default_factory=dict)
    log: Callable[[str], None] = print
    #: Facts a component records for config.json ("notes"): a chosen epoch, data waits.
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvalPlan:
    """How a detector wants its test samples fed (``Detector.plan_evaluation``).

    batches: a fixed batch composition, as lists of indices into the samples (each once),
        for a detector whose score of an image depends on its batch (NS-Net's ``caption``
        projection); None: the runner's order and batch size.
    features: (n, d) inputs computed already (a frozen backbone's cached features): the
        batches then carry ``batch["features"]`` and no image is decoded.
    missing: index -> reason, for samples without features (unreadable files).
    """

    batches: list[list[int]] | None = None
    features: Any = None
    missing: dict[int, str] = field(default_factory=dict)


class Transform(ABC):
    """Image to image, with train-time and eval-time behaviour, deterministic given a seed.

    ``role`` tells an input addon what a step is: the "geometry" step (crop or resize to the
    detector's input size) is the one Patch Selection-like addons replace.
    """

    role: ClassVar[Literal["geometry", "augment", "tensor"]] = "augment"

    @abstractmethod
    def __call__(self, image: Any, *, train: bool, seed: int) -> Any:
        """Return the transformed image (PIL image or tensor, as the chain expects)."""


class TransformChain:
    """An ordered list of transforms; each step gets its own seed derived from the sample's."""

    def __init__(self, steps: Sequence[Transform]):
        self.steps = list(steps)

    def __call__(self, image: Any, *, train: bool, seed: int) -> Any:
        for i, step in enumerate(self.steps):
            image = step(image, train=train, seed=(seed * 1_000_003 + i) % (2**31))
        return image

    def replace_role(self, role: str, new: Transform) -> TransformChain:
        """A copy with every step of ``role`` replaced by one ``new`` step (at the first place)."""
        out: list[Transform] = []
        placed = False
        for step in self.steps:
            if step.role == role:
                if not placed:
                    out.append(new)
                    placed = True
            else:
                out.append(step)
        if not placed:
            out.insert(0, new)
        return TransformChain(out)

    def describe(self) -> list[str]:
        """Stable description, part of cache keys for anything computed from the chain."""
        return [repr(step) for step in self.steps]


class Detector(ABC):
    """A detector of AI-generated images: p(fake) in [0, 1] for a batch.

    Construction must be cheap (no weights, no data): ``bench validate`` builds every
    detector with its default options. Heavy work happens in ``setup``.
    """

    #: Whether ``fit`` learns anything (a pretrained-only detector says False).
    trainable: ClassVar[bool] = True
    #: Capabilities (see CAPABILITIES); addons check them before any work.
    provides: ClassVar[frozenset[str]] = frozenset()
    #: Why an input addon cannot replace this detector's crop/resize ("" = it can).
    geometry_fixed: ClassVar[str] = ""
    #: Addons this detector already contains, each with the option to use instead; the
    #: runner refuses ``--addon NAME`` for them in one line (it would do nothing, or twice).
    includes: ClassVar[dict[str, str]] = {}

    def __init__(self, options: dict[str, Any]):
        self.options = dict(options)
        self.feature_hooks: list[Addon] = []
        self.geometry_override: Addon | None = None
        self._training = False

    # --- declared input -------------------------------------------------------------
    @property
    @abstractmethod
    def input_size(self) -> int:
        """Side of the square image the network takes."""

    @property
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """(mean, std) applied after conversion to a tensor, or None."""
        return None

    @abstractmethod
    def base_transforms(self, train: bool) -> TransformChain:
        """The detector's own chain, ending in a normalised (C, H, W) float tensor."""

    def transforms(self, train: bool) -> TransformChain:
        """``base_transforms`` with an input addon's geometry step swapped in, if any."""
        chain = self.base_transforms(train)
        if self.geometry_override is not None:
            chain = chain.replace_role("geometry", self.geometry_override.geometry(self, train))
        return chain

    # --- life cycle -------------------------------------------------------------------
    @abstractmethod
    def setup(self, ctx: RunContext) -> None:
        """Build networks and move them to ``ctx.device``."""

    def fit(self, train: TrainData, ctx: RunContext) -> list[float]:
        """Train; the default runs the standard loop over ``training_step``. Returns losses."""
        from bench.training import fit_loop

        return fit_loop(self, train, ctx)

    def configure_optimizer(self) -> torch.optim.Optimizer:
        raise NotImplementedError(f"{type(self).__name__} does not train with the standard loop")

    def configure_scheduler(self, optimizer: Any, steps_per_epoch: int, epochs: int) -> Any:
        """An optional per-step LR scheduler; None keeps the LR constant."""
        return None

    def training_step(self, batch: Batch) -> torch.Tensor:
        """The loss of one batch (the standard loop does backward and step)."""
        raise NotImplementedError(f"{type(self).__name__} does not train with the standard loop")

    @abstractmethod
    def predict_proba(self, batch: Batch) -> torch.Tensor:
        """p(fake) for each image of the batch, shape (N,), values in [0, 1]."""

    def plan_evaluation(self, samples: Sequence[Sample], ctx: RunContext) -> EvalPlan | None:
        """Called before evaluation with all test samples; None = the standard loader."""
        return None

    def extract_features(self, images: torch.Tensor) -> torch.Tensor:
        """The feature vector before the head (detectors that provide "features")."""
        raise NotImplementedError(f"{type(self).__name__} exposes no feature vector")

    def apply_feature_hooks(self, features: torch.Tensor, batch: Batch | None) -> torch.Tensor:
        """Run the attached feature addons; detectors with "features" call it before the head."""
        for addon in self.feature_hooks:
            features = addon.apply(features, batch, training=self.is_training())
        return features

    def is_training(self) -> bool:
        return self._training

    def train_mode(self, mode: bool) -> None:
        """Switch between training and evaluation; subclasses also switch their networks."""
        self._training = bool(mode)

    # --- saved state -----------------------------------------------------------------
    @abstractmethod
    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Only what training changed (heads, LoRA): the rest is rebuilt from the config."""

    @abstractmethod
    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        """Inverse of ``trainable_state``; called after ``setup``."""

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Text features (detectors that provide "clip-text")."""
        raise NotImplementedError(f"{type(self).__name__} has no text tower")

    def describe(self) -> dict[str, Any]:
        """Facts for the run log (for example that weights are random)."""
        return {}


class Addon(ABC):
    """A component attached to a detector at a declared hook point.

    "transform": replaces the geometry step of the detector's input chain.
    "features": maps the feature vector before the head (needs "features").
    """

    hook: ClassVar[Literal["transform", "features"]]
    requires: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, options: dict[str, Any]):
        self.options = dict(options)

    @classmethod
    def check_compatible(cls, name: str, detector_name: str, detector_cls: type[Detector]) -> None:
        """Refuse, in one line, an addon whose needs the detector lacks (before any work)."""
        needed = set(cls.requires)
        if cls.hook == "features":
            needed.add("features")
        if cls.hook == "transform" and getattr(detector_cls, "geometry_fixed", ""):
            raise BenchError(
                f"addon '{name}' replaces the input crop/resize, which detector "
                f"'{detector_name}' cannot give up: {detector_cls.geometry_fixed}"
            )
        missing = sorted(needed - set(detector_cls.provides))
        if missing:
            raise BenchError(
                f"addon '{name}' needs {', '.join(repr(m) for m in missing)}, which detector "
                f"'{detector_name}' does not provide (it provides: "
                f"{', '.join(sorted(detector_cls.provides)) or 'nothing'})"
            )

    def attach(self, detector: Detector) -> None:
        if self.hook == "features":
            detector.feature_hooks.append(self)
        else:
            if detector.geometry_fixed:
                raise BenchError(f"input addons cannot be attached: {detector.geometry_fixed}")
            if detector.geometry_override is not None:
                raise BenchError("only one input-transform addon can be attached at a time")
            detector.geometry_override = self

    # transform hook
    def geometry(self, detector: Detector, train: bool) -> Transform:
        raise NotImplementedError

    # features hook
    def prepare(self, detector: Detector, train: TrainData | None, ctx: RunContext) -> None:
        """Called after ``detector.setup`` and before training (train is None at predict)."""

    def apply(self, features: torch.Tensor, batch: Batch | None, training: bool) -> torch.Tensor:
        raise NotImplementedError

    def state(self) -> dict[str, torch.Tensor]:
        """What must be saved with the run to predict later (for example a projector)."""
        return {}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Inverse of ``state``."""


class Perturbation(ABC):
    """A test-time degradation at a level (JPEG quality, scale, blur σ) for robustness sweeps.

    A sweep evaluates a trained detector once per level; each test image is perturbed once,
    on its decoded pixels, before the detector's own chain. ``apply`` must be a function of
    (image, level, options, rng) only: ``rng`` is seeded from the image's own pixels and
    the perturbation's name and level, so the same image gets the same degradation in any
    run, detector, worker or order. Options are declared in the catalogue like any
    component's; ``levels`` (the default levels) is one of them.
    """

    #: What a level is, for tables and plots ("JPEG quality").
    level_name: ClassVar[str] = "level"
    #: "higher" when a larger level degrades more (blur σ), "lower" when a smaller one does
    #: (JPEG quality, scale factor); plots order levels from mild to strong by it.
    stronger: ClassVar[Literal["higher", "lower"]] = "higher"

    def __init__(self, options: dict[str, Any]):
        self.options = dict(options)

    @abstractmethod
    def apply(self, image: Any, level: float, rng: Any) -> Any:
        """The perturbed copy of a PIL RGB image (``rng``: a numpy Generator)."""

    def __repr__(self) -> str:
        """Every option but the levels: part of the cache key of anything computed after it."""
        shown = ", ".join(f"{k}={v!r}" for k, v in sorted(self.options.items()) if k != "levels")
        return f"{type(self).__name__}({shown})"


class TrainData:
    """The training samples and a way to make loaders over them with any transform chain."""

    def __init__(
        self,
        samples: list[Sample],
        loader_factory: Callable[..., DataLoader],
        batch_size: int,
        epochs: int,
        root: str | None = None,
    ):
        self.samples = samples
        self._factory = loader_factory
        self.batch_size = batch_size
        self.epochs = epochs
        #: The training set's path as given (``--train``), for a detector that looks for
        #: a validation set beside it (AIGIBench's val/ next to train/).
        self.root = root

    def subset(self, samples: list[Sample]) -> TrainData:
        """The same settings over other samples (a training set less its validation part)."""
        return TrainData(samples, self._factory, self.batch_size, self.epochs, self.root)

    def loader(
        self,
        chain: TransformChain,
        *,
        train: bool = True,
        shuffle: bool = True,
        batch_size: int | None = None,
        epoch: int = 0,
        drop_last: bool = False,
    ) -> DataLoader:
        return self._factory(
            self.samples,
            chain,
            train=train,
            shuffle=shuffle,
            batch_size=batch_size or self.batch_size,
            epoch=epoch,
            drop_last=drop_last,
        )
