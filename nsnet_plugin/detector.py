"""NS-Net: LoRA-tuned CLIP image features, projected onto the NULL-space of caption
features, trained with (1 − λ)·SupCon + λ·BCE and read by a linear head.

Pipeline per image: Patch Selection (or a crop) -> CLIP mean/std -> U = LoRA-CLIP image
embedding -> U P (P from the batch's caption features in training) -> feature addons ->
Linear(d, 1). The paper's Table-4 switches are options: ``patch_selection``,
``nullspace`` ("none" = off) and ``contrastive``.

The paper does not say what P a test image gets (eval_projection):
  "fixed" (default): one P from all training captions, fitted after captioning and saved
      with the run: test images need no captions, as in the usual protocol;
  "caption": the test images are captioned by the same captioner (cached like training
      captions) and each evaluation batch is projected by its own captions' null space,
      as training batches are; batches are formed per generator from the images ordered
      by content hash, ``batch_size`` at a time, so a score does not depend on the order
      the images are listed in;
  "own": each image projected away from its own caption only (batch-independent);
  "none": no projection.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bench.errors import BenchError
from bench.interfaces import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Batch,
    Detector,
    EvalPlan,
    RunContext,
    TrainData,
    TransformChain,
)
from nsnet_plugin.captions import (
    MISSING_POLICIES,
    PROVIDERS,
    CaptionBank,
    blip_source,
    captions_for,
)
from nsnet_plugin.lora import MODES as LORA_MODES
from nsnet_plugin.lora import SCALINGS as LORA_SCALINGS
from nsnet_plugin.lora import apply_lora, load_lora_state, lora_parameters, lora_state
from nsnet_plugin.losses import nsnet_loss
from nsnet_plugin.nullspace import NullSpace, project_own
from nsnet_plugin.patch_entropy import ENTROPY_INPUTS

NAME = "nsnet"
NULLSPACE_MODES = ("batch", "fixed", "none")
EVAL_PROJECTIONS = ("fixed", "caption", "own", "none")
NORMALIZATIONS = ("clip", "imagenet")
QUICK_GELU = ("auto", "true", "false")
#: What a run saved before an option existed used (its config.json lacks the key).
BEFORE_OPTION = {"lora_scaling": "peft", "entropy_input": "luma", "normalization": "clip"}


def _choice(options: dict[str, Any], key: str, allowed: tuple[str, ...]) -> str:
    value = str(options[key]).lower()
    if value not in allowed:
        raise BenchError(
            f"option {NAME}.{key} must be one of {', '.join(allowed)}, got {options[key]!r}"
        )
    return value


def _positive_or_none(value: Any) -> Any:
    """TOML has no null: 0 (or less) in an option means "not set" (the library default)."""
    return value if value and value > 0 else None


class NSNet(Detector):
    """NS-Net (the paper's reference implementation); construction loads nothing."""

    provides = frozenset({"features", "clip-text"})
    includes = {
        "patchselect": f"use --opt {NAME}.patch_selection=true (the default) or false",
        "nullspace": f"use --opt {NAME}.nullspace=batch (the default), fixed or none",
    }

    def __init__(self, options: dict[str, Any]):
        super().__init__(options)
        o = self.options
        self.nullspace_mode = _choice(o, "nullspace", NULLSPACE_MODES)
        self.eval_projection = _choice(o, "eval_projection", EVAL_PROJECTIONS)
        self.lora_mode = _choice(o, "lora_mode", LORA_MODES)
        for key, value in BEFORE_OPTION.items():
            o.setdefault(key, value)
        self.lora_scaling = _choice(o, "lora_scaling", LORA_SCALINGS)
        self.entropy_input = _choice(o, "entropy_input", ENTROPY_INPUTS)
        self.normalization_stats = _choice(o, "normalization", NORMALIZATIONS)
        _choice(o, "captions", PROVIDERS)
        _choice(o, "missing_captions", MISSING_POLICIES)
        quick = _choice(o, "quick_gelu", QUICK_GELU)
        self.quick_gelu = None if quick == "auto" else quick == "true"
        if not 0.0 <= float(o["lam"]) <= 1.0:
            raise BenchError(f"option {NAME}.lam must be in [0, 1], got {o['lam']}")
        if float(o["temperature"]) <= 0:
            raise BenchError(f"option {NAME}.temperature must be > 0, got {o['temperature']}")
        fixed_energy = _positive_or_none(float(o["fixed_energy"]))
        self.nullspace = NullSpace(
            self.nullspace_mode,  # type: ignore[arg-type]
            rtol=_positive_or_none(float(o["rtol"])),
            max_rank=_positive_or_none(int(o["max_rank"])),
            fixed_k=None if fixed_energy else _positive_or_none(int(o["fixed_k"])),
            fixed_energy=fixed_energy,
        )
        self.backbone: Any = None
        self.head: nn.Linear | None = None
        self.bank: CaptionBank | None = None

    # --- declared input -------------------------------------------------------------
    @property
    def input_size(self) -> int:
        if self.backbone is not None:
            return int(self.backbone.image_size)
        return _config_image_size(str(self.options["model"]))

    @property
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """CLIP's own statistics (the backbone's), or ImageNet's as DGS-Net's code uses."""
        if self.normalization_stats == "imagenet":
            return IMAGENET_MEAN, IMAGENET_STD
        if self.backbone is not None:
            return tuple(self.backbone.mean), tuple(self.backbone.std)
        return CLIP_MEAN, CLIP_STD

    def base_transforms(self, train: bool) -> TransformChain:
        from bench.builtin.transforms import CenterCrop, HorizontalFlip, RandomCrop, ToTensor

        size = self.input_size
        if self.options["patch_selection"]:
            from nsnet_plugin.patch_selection import PatchSelect

            geometry = PatchSelect(
                out_size=size,
                patch_size=int(self.options["patch_size"]),
                small_image=str(self.options["small_image"]),  # type: ignore[arg-type]
                odd_tile=str(self.options["odd_tile"]),  # type: ignore[arg-type]
                entropy_input=self.entropy_input,  # type: ignore[arg-type]
            )
        else:
            geometry = RandomCrop(size) if train else CenterCrop(size)
        steps = [geometry]
        if self.options["hflip"]:
            steps.append(HorizontalFlip())
        mean, std = self.normalization
        steps.append(ToTensor(mean, std))
        return TransformChain(steps)

    # --- life cycle -------------------------------------------------------------------
    def setup(self, ctx: RunContext) -> None:
        """Load CLIP (the heavy part), add LoRA to its image tower, build the head."""
        from bench.backbones.clip import load_clip

        o = self.options
        if self.needs_captions() and o["captions"] == "blip":
            blip_source(str(o["caption_model"]), f"{NAME}.caption_model")  # fail before CLIP
        self.backbone = load_clip(
            str(o["model"]),
            str(o["pretrained"]),
            ctx.device,
            quick_gelu=self.quick_gelu,
            option=f"{NAME}.pretrained",
        )
        apply_lora(
            self.backbone.visual,
            int(o["lora_r"]),
            float(o["lora_alpha"]),
            float(o["lora_dropout"]),
            mode=self.lora_mode,
            targets=tuple(o["lora_targets"]),
            scaling=self.lora_scaling,
        )
        self.head = nn.Linear(self.backbone.embed_dim, 1).to(ctx.device)
        self.bank = CaptionBank(self.encode_text)
        self.train_mode(False)

    def _require_setup(self) -> None:
        if self.backbone is None or self.head is None:
            raise RuntimeError("NSNet.setup(ctx) must run first")

    def needs_captions(self) -> bool:
        return self.nullspace_mode != "none"

    def prepare_captions(self, samples: list[Any], ctx: RunContext) -> None:
        """Caption the training samples and fit the fixed P (what evaluation uses).

        Nothing happens with ``nullspace = "none"``: that ablation needs no captions.
        """
        self._require_setup()
        if not self.needs_captions():
            return
        assert self.bank is not None
        self.bank.set(captions_for(samples, self.options, ctx, NAME))
        if self.nullspace_mode == "fixed" or self.eval_projection == "fixed":  # what needs it
            V = self.bank.distinct()
            P = self.nullspace.fit_fixed(V)
            if P is not None:
                kept = round(float(torch.trace(P.double())))
                ctx.log(
                    f"{NAME}: fixed projector from {V.shape[0]} distinct training captions "
                    f"keeps {kept} of {P.shape[0]} dimensions"
                )

    def fit(self, train: TrainData, ctx: RunContext) -> list[float]:
        """Captions (and the fixed P) first, then the standard loop."""
        from bench.training import fit_loop

        self.prepare_captions(train.samples, ctx)
        return fit_loop(self, train, ctx)

    def plan_evaluation(self, samples: list[Any], ctx: RunContext) -> EvalPlan | None:
        """Caption the test images for the ``caption`` / ``own`` readings; fix the batches.

        ``caption``: per (test set, generator), images ordered by their content hash,
        ``batch_size`` (the training batch, so V has the rank a training batch's has) at a
        time. The runner hands each distinct image once: a real that several generators
        pair with is batched with the first of them.
        """
        self._require_setup()
        if not self.needs_captions() or self.eval_projection not in ("caption", "own"):
            return None
        assert self.bank is not None
        self.bank.add(captions_for(samples, self.options, ctx, NAME, what="test"))
        if self.eval_projection == "own":
            return None
        from bench.cache import file_digests

        digests = file_digests([s.path for s in samples])
        by_generator: dict[tuple[str, str], list[int]] = {}
        for i, sample in enumerate(samples):
            group = (getattr(sample, "dataset", ""), sample.generator)
            by_generator.setdefault(group, []).append(i)
        size = int(self.options["batch_size"])
        batches = []
        for gen in sorted(by_generator):
            ordered = sorted(by_generator[gen], key=lambda i: (digests[i] or "~", samples[i].path))
            batches += [ordered[k : k + size] for k in range(0, len(ordered), size)]
        ctx.log(
            f"{NAME}: evaluation projects each of {len(batches)} fixed batches (per generator, "
            f"by content hash, {size} images) by its own captions' null space"
        )
        return EvalPlan(batches=batches)

    def configure_optimizer(self) -> torch.optim.Optimizer:
        self._require_setup()
        params = lora_parameters(self.backbone.visual) + list(self.head.parameters())
        return torch.optim.Adam(params, lr=float(self.options["lr"]))

    # --- forward ------------------------------------------------------------------------
    def extract_features(self, images: torch.Tensor) -> torch.Tensor:
        """U: the LoRA-CLIP image embedding (before any projection)."""
        self._require_setup()
        return self.backbone.encode_image(images)

    def _project(self, U: torch.Tensor, batch: Batch | None, training: bool) -> torch.Tensor:
        """U P in float32 (nullspace.py: a bf16 projection lets removed semantics back)."""
        if self.nullspace_mode == "none":
            return U
        if training and self.nullspace_mode == "batch":
            assert self.bank is not None and batch is not None
            # V on the CPU: the SVD runs there, and only the basis goes to the GPU
            return self.nullspace.project_batch(U, self.bank.for_paths(list(batch["path"])))
        if training:
            return self.nullspace(U, None, training=True)
        if self.eval_projection == "none":
            return U
        if self.eval_projection in ("caption", "own"):
            if self.bank is None or batch is None or "path" not in batch:
                raise BenchError(f"{NAME}: eval_projection needs the batch's image paths")
            V = self.bank.for_paths(list(batch["path"]))
            if self.eval_projection == "own":
                return project_own(U, V)
            return self.nullspace.project_batch(U, V)
        if self.nullspace.fixed is None:
            raise BenchError(
                f"{NAME}: no fixed projector for evaluation (train first, load a saved state, "
                f"or set --opt {NAME}.eval_projection=none)"
            )
        return self.nullspace(U, None, training=False)

    def _features_and_logits(
        self, batch: Batch, training: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        U = self.extract_features(batch["image"])
        f = self.apply_feature_hooks(self._project(U, batch, training), batch)
        return f, self.head(f).squeeze(1)

    def training_step(self, batch: Batch) -> torch.Tensor:
        features, logits = self._features_and_logits(batch, training=True)
        loss, parts = nsnet_loss(
            features,
            logits,
            batch["label"],
            lam=float(self.options["lam"]),
            temperature=float(self.options["temperature"]),
            contrastive=bool(self.options["contrastive"]),
        )
        self.last_loss_parts = {k: float(v) for k, v in parts.items()}
        return loss

    @torch.no_grad()
    def predict_proba(self, batch: Batch) -> torch.Tensor:
        _, logits = self._features_and_logits(batch, training=False)
        return torch.sigmoid(logits.float())

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Frozen CLIP text features (n, d), in the image embedding's space."""
        self._require_setup()
        return self.backbone.encode_text(list(texts))

    def train_mode(self, mode: bool) -> None:
        """Only the image tower (LoRA dropout) and the head switch; the rest stays frozen."""
        super().train_mode(mode)
        if self.backbone is not None:
            self.backbone.visual.train(mode)
        if self.head is not None:
            self.head.train(mode)

    # --- saved state ---------------------------------------------------------------------
    def trainable_state(self) -> dict[str, torch.Tensor]:
        """LoRA, head and the fitted fixed projector; the rest is rebuilt from the options."""
        self._require_setup()
        state = {f"lora.{k}": v for k, v in lora_state(self.backbone.visual).items()}
        state.update(
            {f"head.{k}": v.detach().cpu().clone() for k, v in self.head.state_dict().items()}
        )
        state.update({f"nullspace.{k}": v for k, v in self.nullspace.state().items()})
        return state

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        self._require_setup()
        load_lora_state(self.backbone.visual, _under(state, "lora."))
        head = _under(state, "head.")
        try:
            self.head.load_state_dict(head)
        except RuntimeError as exc:  # torch's first line names only the module: add the why
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            raise BenchError(
                f"saved {NAME} head does not fit this model: {'; '.join(lines[1:] or lines)}"
            ) from None
        device = self.head.weight.device
        self.nullspace.load_state({k: v.to(device) for k, v in _under(state, "nullspace.").items()})

    def describe(self) -> dict[str, Any]:
        o = self.options
        facts: dict[str, Any] = {
            "backbone": f"{o['model']}/{o['pretrained'] or 'random'}",
            "random_weights": str(o["pretrained"]).strip().lower() in {"", "none", "random"},
        }
        if self.backbone is not None:
            facts.update(self.backbone.describe())
        targets = "in_proj+out_proj" if self.lora_mode == "mha" else "+".join(o["lora_targets"])
        facts["lora"] = (
            f"{self.lora_mode} on {targets}, r={o['lora_r']} alpha={o['lora_alpha']} "
            f"dropout={o['lora_dropout']} scaling={self.lora_scaling}"
            + (" (peft ignores dropout in mha mode)" if self.lora_mode == "mha" else "")
        )
        facts["nullspace"] = (
            f"{self.nullspace_mode} (evaluation: {self.eval_projection})"
            if self.nullspace_mode != "none"
            else "none"
        )
        facts["captions"] = o["captions"] if self.needs_captions() else "not used"
        return facts


def _under(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _config_image_size(model: str) -> int:
    """The model's input side from its open_clip config (no weights): cheap before setup."""
    from bench.backbones.clip import register_tiny_config

    try:
        import open_clip

        register_tiny_config()
        cfg = open_clip.get_model_config(model) or {}
    except Exception:  # an unknown model is reported by setup, in one line
        return 224
    size = cfg.get("vision_cfg", {}).get("image_size", 224)
    return int(size[0] if isinstance(size, list | tuple) else size)
