"""The option rule for NS-Net and the NULL-space addon (UnivFD / VIB-Net: option_checks_frozen.py).

Checks build the component (and, where the option acts on the network, set it up on the
tiny random-weight CLIP); expected values come from formulas in the checks (numpy SVDs,
alpha / sqrt(r), closed-form KL, the CLIP / ImageNet statistics), not from the code.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bench.data.layouts import read_dataset
from bench.interfaces import RunContext
from tests.option_rule import checks, make, options, photo, same

NS = "detector:nsnet"
ADDON = "addon:nullspace"
FROZEN = ("univfd", "vibnet")


def ctx() -> RunContext:
    return RunContext(device="cpu", seed=0, workers=0, log=lambda _m: None)


def nsnet(**over):
    """NS-Net on the tiny CLIP with deterministic random weights (prompt captions)."""
    torch.manual_seed(0)
    detector = make("detector", "nsnet", **{"captions": "prompt", **over})
    detector.setup(ctx())
    return detector


def few(tree, n: int = 2) -> list:
    everything = read_dataset(str(tree))
    out = []
    for gen in ("gan_a", "gan_b"):
        for label in (0, 1):
            out += [s for s in everything if s.generator == gen and s.label == label][:n]
    return out


def first_batch(detector, samples):
    from bench.data.pipeline import make_loader

    chain = detector.transforms(train=False)
    loader = make_loader(samples, chain, train=False, shuffle=False, batch_size=len(samples))
    return next(iter(loader))


# ----------------------------------------------------------------------------- LoRA
def _filled_features(detector, train: bool = False) -> torch.Tensor:
    """Features after every LoRA weight is set to fixed non-zero values (B starts at 0)."""
    from nsnet_plugin.lora import lora_parameters

    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in lora_parameters(detector.backbone.visual):
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    detector.train_mode(train)
    images = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(3)  # the same dropout masks in both builds
    with torch.no_grad():
        return detector.extract_features(images)


def _scalings(detector) -> set[float]:
    return {
        float(v)
        for m in detector.backbone.visual.modules()
        if isinstance(getattr(m, "scaling", None), dict)
        for v in m.scaling.values()
    }


@checks(f"{NS}.lora_r", f"{NS}.lora_alpha", f"{NS}.lora_scaling")
def _lora_rank_and_scale(_tree):
    from nsnet_plugin.lora import lora_state

    for r, alpha, scaling, s in ((4, 6.0, "clip-lora", 3.0), (2, 8.0, "peft", 4.0)):
        detector = nsnet(lora_r=r, lora_alpha=alpha, lora_scaling=scaling, nullspace="none")
        scalings = _scalings(detector)  # alpha/sqrt(r) or alpha/r
        assert len(scalings) == 1 and scalings.pop() == pytest.approx(s)
        shapes = {
            v.shape[0] for k, v in lora_state(detector.backbone.visual).items() if "lora_A" in k
        }
        assert shapes == {r}
    a = _filled_features(nsnet(lora_alpha=6.0, nullspace="none"))
    assert not same(a, _filled_features(nsnet(lora_alpha=12.0, nullspace="none")))


@checks(f"{NS}.lora_dropout")
def _lora_dropout(_tree):
    none, heavy = nsnet(lora_dropout=0.0), nsnet(lora_dropout=0.8)
    assert same(_filled_features(none), _filled_features(heavy))  # evaluation: no dropout
    assert not same(_filled_features(none, train=True), _filled_features(heavy, train=True))


@checks(f"{NS}.lora_mode", f"{NS}.lora_targets")
def _lora_layout(_tree):
    from nsnet_plugin.lora import lora_state

    def adapted(**over) -> set[str]:
        names = lora_state(nsnet(nullspace="none", **over).backbone.visual)
        return {k.split(".lora_")[0].rsplit(".", 1)[1] for k in names}

    assert adapted() == {"q_proj", "k_proj", "v_proj"}
    assert adapted(lora_targets=["q", "out"]) == {"q_proj", "out_proj"}
    assert "q_proj" not in adapted(lora_mode="mha")


@checks(f"{NS}.quick_gelu")
def _quick_gelu(_tree):
    images = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    quick, plain = (nsnet(quick_gelu=v, nullspace="none") for v in ("true", "false"))
    assert not same(quick.extract_features(images), plain.extract_features(images))


# ----------------------------------------------------------------------------- NS-Net loss
def _loss_parts(tree, **over) -> dict:
    detector = nsnet(**over)
    samples = few(tree)
    detector.prepare_captions(samples, ctx())
    detector.training_step(first_batch(detector, samples))
    return detector.last_loss_parts


@checks(f"{NS}.lam", f"{NS}.temperature", f"{NS}.contrastive")
def _nsnet_loss(tree):
    for lam in (0.2, 0.7):
        parts = _loss_parts(tree, lam=lam)
        expected = (1 - lam) * parts["supcon"] + lam * parts["bce"]
        assert parts["total"] == pytest.approx(expected, rel=1e-5)
    warm = _loss_parts(tree, temperature=1.0)
    assert warm["supcon"] != pytest.approx(_loss_parts(tree)["supcon"], rel=1e-3)
    plain = _loss_parts(tree, contrastive=False)
    assert "supcon" not in plain and plain["total"] == plain["bce"]


# ----------------------------------------------------------------------------- input chain
def _chain_out(name: str, train: bool = False, seed: int = 1, **over):
    chain = make("detector", name, **over).transforms(train=train)
    return chain(photo(), train=train, seed=seed)


@checks(
    f"{NS}.patch_selection",
    f"{NS}.patch_size",
    f"{NS}.small_image",
    f"{NS}.odd_tile",
    f"{NS}.entropy_input",
)
def _nsnet_geometry(_tree):
    base = _chain_out("nsnet")
    assert not same(base, _chain_out("nsnet", patch_selection=False))
    assert not same(base, _chain_out("nsnet", patch_size=16))
    assert not same(base, _chain_out("nsnet", odd_tile="low"))
    assert not same(base, _chain_out("nsnet", entropy_input="rgb-mean"))
    small = photo(100)
    reflect, resize = (
        make("detector", "nsnet", small_image=v).transforms(train=False)(small, train=False, seed=0)
        for v in ("reflect", "resize")
    )
    assert not same(reflect, resize)


@checks(f"{NS}.normalization")
def _nsnet_normalization(_tree):
    from bench.interfaces import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD

    clip, imagenet = (_chain_out("nsnet", normalization=v) for v in ("clip", "imagenet"))
    assert not same(clip, imagenet)

    def undo(x, mean, std):
        return x * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)

    torch.testing.assert_close(
        undo(clip, CLIP_MEAN, CLIP_STD),
        undo(imagenet, IMAGENET_MEAN, IMAGENET_STD),
        atol=1e-5,
        rtol=0,
    )


@checks(f"{NS}.hflip")
def _nsnet_hflip(_tree):
    flipped = 0
    for seed in range(8):
        plain = _chain_out("nsnet", train=True, seed=seed)
        maybe = _chain_out("nsnet", train=True, seed=seed, hflip=True)
        if same(maybe, torch.flip(plain, dims=[-1])) and not same(maybe, plain):
            flipped += 1
        else:
            assert same(maybe, plain)
    assert 0 < flipped < 8  # p = 0.5 per image


# ----------------------------------------------------------------------------- projection
def _numpy_removed(U, V, keep_rank) -> np.ndarray:
    """U minus its part in the span of V's top ``keep_rank`` right singular vectors."""
    _, _, vt = np.linalg.svd(V.double().numpy(), full_matrices=False)
    top = vt[:keep_rank]
    u = U.double().numpy()
    return u - u @ top.T @ top


def _space_checks(space_of):
    """rtol / max_rank (per batch) and fixed_k / fixed_energy (fixed P) against numpy."""

    def check(_tree):
        g = torch.Generator().manual_seed(0)
        V = torch.randn(8, 64, generator=g) * torch.linspace(3, 0.1, 8)[:, None]
        U = torch.randn(5, 64, generator=g)
        full = space_of().project_batch(U, V)
        np.testing.assert_allclose(full.double().numpy(), _numpy_removed(U, V, 8), atol=1e-4)
        capped = space_of(max_rank=2).project_batch(U, V)
        np.testing.assert_allclose(capped.double().numpy(), _numpy_removed(U, V, 2), atol=1e-4)
        s = np.linalg.svd(V.double().numpy(), compute_uv=False)
        rank = int((s > 0.3 * s[0]).sum())
        assert 1 <= rank < 8
        loose = space_of(rtol=0.3).project_batch(U, V)
        np.testing.assert_allclose(loose.double().numpy(), _numpy_removed(U, V, rank), atol=1e-4)
        many = torch.randn(40, 64, generator=g) * torch.linspace(4, 0.1, 64)
        for k in (3, 10):
            P = space_of(fixed_k=k).fit_fixed(many)
            assert float(torch.trace(P)) == pytest.approx(64 - k, abs=1e-4)
        power = np.linalg.svd(many.double().numpy(), compute_uv=False) ** 2
        need = int(np.searchsorted(np.cumsum(power) / power.sum(), 0.5)) + 1
        P = space_of(fixed_energy=0.5).fit_fixed(many)
        assert float(torch.trace(P)) == pytest.approx(64 - need, abs=1e-4)

    return check


def _nsnet_space(**over):
    return make("detector", "nsnet", **over).nullspace


def _addon_space(**over):
    return make("addon", "nullspace", **over).nullspace


checks(f"{NS}.rtol", f"{NS}.max_rank", f"{NS}.fixed_k", f"{NS}.fixed_energy")(
    _space_checks(_nsnet_space)
)
checks(f"{ADDON}.rtol", f"{ADDON}.max_rank", f"{ADDON}.fixed_k", f"{ADDON}.fixed_energy")(
    _space_checks(_addon_space)
)


@checks(f"{NS}.nullspace", f"{NS}.eval_projection")
def _nsnet_projection(tree):
    samples = few(tree)  # 4 distinct captions; a gan_a batch has 2, each image 1
    U = torch.randn(4, 64, generator=torch.Generator().manual_seed(0))
    batch = {"path": [s.path for s in samples[:4]]}

    def projected(training: bool, **over):
        detector = nsnet(prompt_template="a {label} {class}", **over)
        detector.prepare_captions(samples, ctx())
        detector.plan_evaluation(samples, ctx())
        return detector._project(U, batch, training)

    train = {v: projected(True, nullspace=v) for v in ("batch", "fixed", "none")}
    assert same(train["none"], U)
    assert not same(train["batch"], U) and not same(train["fixed"], U)
    assert not same(train["batch"], train["fixed"])
    evals = {v: projected(False, eval_projection=v) for v in ("fixed", "caption", "own", "none")}
    assert same(evals["none"], U)
    values = list(evals.values())
    assert all(not same(a, b) for i, a in enumerate(values) for b in values[i + 1 :])


# ----------------------------------------------------------------------------- captions
def _caption_checks(kind: str, name: str):
    def captions(tree, tmp=None, **over):
        from nsnet_plugin.captions import captions_for

        return captions_for(few(tree, 1), options(kind, name, **over), ctx(), name)

    def check(tree):
        import tempfile

        from nsnet_plugin.captions import BlipCaptions, make_provider

        samples = few(tree, 1)
        prompt = captions(tree, captions="prompt", prompt_template="a {class} picture")
        assert set(prompt.values()) == {"a gan a picture", "a gan b picture"}
        with tempfile.TemporaryDirectory() as folder:
            file = f"{folder}/captions.json"
            with open(file, "w") as fh:
                json.dump({s.path: f"caption {i}" for i, s in enumerate(samples[:3])}, fh)
            with pytest.raises(Exception, match="no caption"):
                captions(tree, captions="file", caption_file=file, missing_captions="error")
            filled = captions(
                tree,
                captions="file",
                caption_file=file,
                missing_captions="prompt",
                prompt_template="x {class}",
            )
        assert [filled[s.path] for s in samples] == [
            "caption 0",
            "caption 1",
            "caption 2",
            "x gan b",
        ]
        blip = make_provider(
            options(
                kind,
                name,
                captions="blip",
                caption_model="some/blip",
                caption_batch_size=3,
                caption_max_tokens=7,
            ),
            name,
        )
        assert isinstance(blip, BlipCaptions)
        assert (blip.model_id, blip.batch_size, blip.max_new_tokens) == ("some/blip", 3, 7)

    return check


for _kind, _name, _prefix in (("detector", "nsnet", NS), ("addon", "nullspace", ADDON)):
    checks(
        *(
            f"{_prefix}.{k}"
            for k in (
                "captions",
                "caption_file",
                "prompt_template",
                "missing_captions",
                "caption_model",
                "caption_batch_size",
                "caption_max_tokens",
            )
        )
    )(_caption_checks(_kind, _name))


@checks(f"{ADDON}.mode")
def _addon_mode(tree):
    from bench.data.pipeline import make_loader
    from bench.interfaces import TrainData

    samples = few(tree)  # 4 distinct captions; a gan_a batch has 2 of them
    detector = nsnet(nullspace="none")
    U = torch.randn(4, 64, generator=torch.Generator().manual_seed(0))
    batch = {"path": [s.path for s in samples[:4]]}
    train = TrainData(samples, lambda s, c, **kw: make_loader(s, c, **kw), batch_size=4, epochs=1)
    out = {}
    for mode in ("fixed", "batch"):
        addon = make(
            "addon", "nullspace", mode=mode, captions="prompt", prompt_template="a {label} {class}"
        )
        addon.prepare(detector, train, ctx())
        out[mode] = addon.apply(U, batch, training=True)
        assert same(addon.apply(U, batch, training=False), U @ addon.state()["fixed_projector"])
    assert not same(out["fixed"], out["batch"])


# ----------------------------------------------------------------------------- optimiser
@checks(f"{NS}.lr")
def _nsnet_lr(_tree):
    assert nsnet(lr=3e-3, nullspace="none").configure_optimizer().param_groups[0]["lr"] == 3e-3


@checks(*(f"detector:{n}.eval_batch_size" for n in ("nsnet", *FROZEN)))
def _eval_batch_size(_tree):
    from bench.evaluation import eval_batch_size

    for name in ("nsnet", *FROZEN):
        assert eval_batch_size(make("detector", name, eval_batch_size=7)) == 7
