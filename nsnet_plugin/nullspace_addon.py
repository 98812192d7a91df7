"""NS-Net's NULL-space projection as an addon for any CLIP detector (UnivFD, VIB-Net, ...).

The paper's plug-and-play experiment (Table 7) projects another detector's CLIP features
away from the semantics of the training captions. Such a detector trains in its own loop,
so the default is mode "fixed": one P from all training captions (the top ``fixed_k``
right singular directions), fitted in ``prepare`` and used at training and evaluation.
Mode "batch" uses each training batch's own captions, as NS-Net itself does, and the fixed
P at evaluation (test images have no captions).
"""

from __future__ import annotations

from typing import Any

import torch

from bench.errors import BenchError
from bench.interfaces import Addon, Batch, Detector, RunContext, TrainData
from nsnet_plugin.captions import MISSING_POLICIES, PROVIDERS, CaptionBank, captions_for
from nsnet_plugin.nullspace import NullSpace

NAME = "nullspace"
ADDON_MODES = ("fixed", "batch")


def _positive_or_none(value: Any) -> Any:
    return value if value and value > 0 else None


class NullSpaceAddon(Addon):
    """features -> features · P, with P from training captions encoded by the detector."""

    hook = "features"
    requires = frozenset({"clip-text"})

    def __init__(self, options: dict[str, Any]):
        super().__init__(options)
        o = self.options
        mode = str(o.get("mode", "fixed"))
        for key, value, allowed in (
            ("mode", mode, ADDON_MODES),
            ("captions", str(o.get("captions", "file")), PROVIDERS),
            ("missing_captions", str(o.get("missing_captions", "error")), MISSING_POLICIES),
        ):
            if value not in allowed:
                raise BenchError(
                    f"option {NAME}.{key} must be one of {', '.join(allowed)}, got {value!r}"
                )
        energy = _positive_or_none(float(o.get("fixed_energy", 0.0)))
        self.nullspace = NullSpace(
            mode,  # type: ignore[arg-type]
            rtol=_positive_or_none(float(o.get("rtol", 0.0))),
            max_rank=_positive_or_none(int(o.get("max_rank", 0))),
            fixed_k=None if energy else _positive_or_none(int(o.get("fixed_k", 32))),
            fixed_energy=energy,
        )
        self.bank: CaptionBank | None = None

    def prepare(self, detector: Detector, train: TrainData | None, ctx: RunContext) -> None:
        """Caption the training images, encode them with the detector's text tower, fit P."""
        if train is None:
            return  # predicting: ``load_state`` brings the projector
        self.bank = CaptionBank(detector.encode_text)
        self.bank.set(captions_for(train.samples, self.options, ctx, NAME))
        V = self.bank.distinct()
        P = self.nullspace.fit_fixed(V)
        assert P is not None
        kept = round(float(torch.trace(P.double())))
        ctx.log(
            f"{NAME}: projector from {V.shape[0]} distinct training captions keeps "
            f"{kept} of {P.shape[0]} dimensions"
        )

    def apply(self, features: torch.Tensor, batch: Batch | None, training: bool) -> torch.Tensor:
        if training and self.nullspace.mode == "batch" and self.bank is not None:
            if batch is None or "path" not in batch:
                raise BenchError(f"addon '{NAME}' (mode batch) needs the batch's image paths")
            # float32 even under autocast, without forming P (nullspace.py)
            return self.nullspace.project_batch(features, self.bank.for_paths(list(batch["path"])))
        if self.nullspace.fixed is None:
            raise BenchError(
                f"addon '{NAME}' has no projector: it is fitted on the training captions "
                "(train the detector, or load a run's saved state)"
            )
        return self.nullspace(features, None, training=False)

    def state(self) -> dict[str, torch.Tensor]:
        return self.nullspace.state()

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.nullspace.load_state(state)
