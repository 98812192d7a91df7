"""The option rule (issue 17): every declared option changes what its doc says it changes.

This module holds the meta-test over the whole registry, the runner-level check, and the
checks run once per check function. The checks are in tests/option_checks_core.py (no
CLIP: Patch Selection, perturbations, SAFE, the spectral baseline) and
tests/option_checks_clip.py (NS-Net, the NULL-space addon), tests/option_checks_frozen.py
(UnivFD, VIB-Net) and tests/option_checks_new.py (DFFreq, NPR, FreqNet, CNN-Spot, LaDeDa, AIDE); the registry
and the exemptions' shared reasons in tests/option_rule.py.
"""

from __future__ import annotations

import pytest

from tests import (  # noqa: F401  (they register the checks)
    option_checks_clip,
    option_checks_core,
    option_checks_frozen,
    option_checks_new,
)
from tests import option_rule as rule

# ----------------------------------------------------------------------------- the rule


def test_every_declared_option_has_an_effect_check_or_a_reasoned_exemption():
    declared = rule.declared_keys()
    missing = [k for k in declared if k not in rule.CHECKS and k not in rule.EXEMPT]
    assert not missing, "options with no effect check and no exemption: " + ", ".join(missing)
    both = sorted(set(rule.CHECKS) & set(rule.EXEMPT))
    assert not both, f"checked and exempted at once: {both}"
    stale = sorted((set(rule.CHECKS) | set(rule.EXEMPT)) - set(declared))
    assert not stale, f"checks or exemptions for options nobody declares: {stale}"
    for key, reason in rule.EXEMPT.items():
        named = [w.rstrip(".,;)") for w in reason.split() if "::" in w]
        assert named, f"{key}: an exemption names the test that pins the option"
        for ref in named:
            assert rule.file_in_tests(ref), f"{key}: {ref} is not a test in this suite"


def _by_check() -> dict[str, tuple]:
    """One run per check function, however many options it covers."""
    grouped: dict = {}
    for key, fn in sorted(rule.CHECKS.items()):
        grouped.setdefault(fn, []).append(key)
    return {f"{keys[0]}+{len(keys) - 1}": (fn, keys) for fn, keys in grouped.items()}


@pytest.mark.parametrize("check", sorted(_by_check()))
def test_option_changes_what_it_claims(check, tiny_tree):
    fn, keys = _by_check()[check]
    fn(tiny_tree)  # covers: keys


def test_runner_reads_batch_size_and_epochs(tmp_path, tiny_tree, tiny_test_tree, monkeypatch):
    """One run through bench.runner: 2 epochs x ceil(48 / 20) = 3 batches of 20, 20, 8."""
    from bench.builtin.spectral_logreg import SpectralLogReg
    from bench.plugins import get_registry
    from bench.runner import RunSpec, run

    sizes: list[int] = []
    step = SpectralLogReg.training_step

    def counting(self, batch):
        sizes.append(len(batch["label"]))
        return step(self, batch)

    monkeypatch.setattr(SpectralLogReg, "training_step", counting)
    spec = RunSpec(
        detector="spectral_logreg",
        train=str(tiny_tree),
        test=[str(tiny_test_tree)],
        out=str(tmp_path / "out"),
        progress=False,
        workers=0,
        options={"spectral_logreg": {"batch_size": 20, "epochs": 2, "input_size": 32}},
        plots=False,
    )
    run(spec, get_registry())
    assert sorted(sizes) == sorted([20, 20, 8] * 2)
