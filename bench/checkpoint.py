"""Training checkpoints: what a killed run needs to continue exactly where it stopped.

``OUT/runs/<id>/checkpoint.pt`` holds the trainable state, the optimiser's and the
scheduler's state, every random generator's state, the losses so far and the data
position (epoch, batches of it done). It is replaced atomically at the end of every epoch
and every ``--checkpoint-every N`` steps, by process 0 only, and removed when the run
finishes. ``bench run --resume RUN_DIR`` loads it inside the standard training loop
(``bench.training.fit_loop``): the loader of the interrupted epoch leaves out the batches
already done, and every batch and augmentation is the one the uninterrupted run has, so
on the CPU the resumed run ends bit-identical to an uninterrupted one.

The file is read with ``torch.load(weights_only=True)``: it can hold tensors and plain
values only, never code. Import-light: torch loads inside the methods.
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.fileio import atomic_write_bytes

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = 1


class Checkpoints:
    """Writes and reads one run's training checkpoint."""

    def __init__(self, run_dir: Path, every: int | None, main: bool = True, log: Any = None):
        self.path = Path(run_dir) / CHECKPOINT_NAME
        self.every = every
        self.main = main
        self.log = log or (lambda message: None)
        #: Set by ``restore``: where training went on from, for config.json.
        self.resumed_at: dict[str, int] | None = None
        self.used = False  # whether the training loop consulted the checkpoints at all

    def due(self, step: int) -> bool:
        """Whether to write after global step ``step`` (1-based) besides the epoch ends."""
        return bool(self.every) and step % int(self.every) == 0

    def save(
        self,
        detector: Any,
        optimizer: Any,
        scheduler: Any,
        *,
        epoch: int,
        batch: int,
        losses: list[float],
    ) -> None:
        """Atomically, by process 0: ``epoch`` and its first ``batch`` batches are done."""
        if not self.main:
            return
        import torch

        state = {
            "format": FORMAT,
            "epoch": int(epoch),
            "batch": int(batch),
            "losses": [float(v) for v in losses],
            "trainable": {k: v.detach().cpu() for k, v in detector.trainable_state().items()},
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "rng": rng_state(),
        }
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(self.path, buf.getvalue(), fsync=True)

    def restore(self, detector: Any, optimizer: Any, scheduler: Any) -> dict[str, Any] | None:
        """Load the checkpoint into detector, optimiser, scheduler and the RNGs, if one exists.

        Returns {"epoch", "batch", "losses"}: where to go on from; None: start afresh.
        """
        self.used = True
        if not self.path.is_file():
            return None
        import torch

        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a truncated or foreign file: say so, never guess
            raise BenchError(f"cannot read {self.path}: {str(exc).splitlines()[0]}") from None
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise BenchError(f"{self.path} is not a bench training checkpoint")
        detector.load_trainable_state(state["trainable"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state["scheduler"] is not None:
            scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        self.resumed_at = {
            "epoch": state["epoch"] + 1,  # 1-based, as the log counts epochs
            "batches_done": state["batch"],
            "steps_done": len(state["losses"]),
        }
        self.log(
            f"resumed from {self.path.name}: epoch {state['epoch'] + 1}, after batch "
            f"{state['batch']} ({len(state['losses'])} steps done)"
        )
        return {"epoch": state["epoch"], "batch": state["batch"], "losses": state["losses"]}

    def remove(self) -> None:
        if self.main:
            self.path.unlink(missing_ok=True)


def rng_state() -> dict[str, Any]:
    """torch's (CPU and every CUDA device), numpy's and Python's global generator states."""
    import numpy as np
    import torch

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
