"""What Patch Selection keeps of one image, for pictures (`bench show-patches`).

Uses the very selection the transform applies (``patch_selection.selection``, same seed
rule: at evaluation, the seed comes from the kept patches), and takes the tiled image from the transform itself, so the picture shows exactly
what the network receives.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from bench.errors import BenchError
from nsnet_plugin.patch_selection import selection, split_counts

if TYPE_CHECKING:
    from nsnet_plugin.patch_selection import PatchSelect


def explain_patch_select(
    step: PatchSelect, image: Any, *, train: bool = False, seed: int = 0
) -> dict[str, Any]:
    """The kept patches of ``image`` and the tiled output of ``step``.

    Returns "input" (the image the patches are cut from: mirror-padded when small),
    "boxes" ((left, top, right, bottom, group) per kept patch; group "highest" or "lowest"
    spectral entropy), "output" (the tiled image, from ``step`` itself), "tiles" (the
    group of each output tile, row-major), "tile_size" and a one-line "summary".
    """
    tensor, mode = _pil_to_tensor(image)
    try:
        grown, picks, order = selection(
            tensor[None],
            step.out_size,
            step.patch_size,
            [seed],
            small_image=step.small_image,
            odd_tile=step.odd_tile,
            shuffle=step.shuffle,
            entropy_input=step.entropy_input,
            content_seeds=not train,
        )
    except ValueError as exc:
        raise BenchError(f"patch_select: {exc}") from None
    n = step.patch_size
    n_high, _ = split_counts((step.out_size // n) ** 2, step.odd_tile)
    group = {int(i): "highest" if r < n_high else "lowest" for r, i in enumerate(picks[0])}
    cols = grown.shape[-1] // n
    boxes = [
        ((i % cols) * n, (i // cols) * n, (i % cols + 1) * n, (i // cols + 1) * n, g)
        for i, g in group.items()
    ]
    total = (grown.shape[-2] // n) * cols
    return {
        "input": _tensor_to_pil(grown[0], mode),
        "boxes": boxes,
        "output": step(image, train=train, seed=seed),
        "tiles": [group[int(i)] for i in order[0]],
        "tile_size": n,
        "summary": (
            f"{n_high} highest + {len(group) - n_high} lowest spectral-entropy patches of "
            f"{total} ({n} px), tiled to {step.out_size} px"
            + (", shuffled" if step.shuffle else "")
        ),
    }


def _pil_to_tensor(image: Any) -> tuple[torch.Tensor, str]:
    """PIL "RGB" or "L" as a (C, H, W) uint8 tensor; other modes are converted to RGB."""
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    array = np.array(image, dtype=np.uint8, copy=True)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array).permute(2, 0, 1).contiguous(), image.mode


def _tensor_to_pil(tensor: torch.Tensor, mode: str) -> Any:
    from PIL import Image

    array = tensor.permute(1, 2, 0).numpy()
    return Image.fromarray(array[:, :, 0] if mode == "L" else array, mode=mode)
