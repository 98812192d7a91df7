"""`bench predict` on run folders from others: tampered config or state is one line, exit 2."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from bench.cli import main
from bench.plugins import get_registry
from bench.runner import RunSpec, run
from tests.bad_inputs import png_bomb


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_tree, tiny_test_tree):
    out = tmp_path_factory.mktemp("predict-runs")
    spec = RunSpec(
        detector="spectral_logreg",
        train=str(tiny_tree),
        test=[str(tiny_test_tree)],
        out=str(out),
        progress=False,
        workers=0,
        epochs=2,
    )
    return run(spec, get_registry())


@pytest.fixture
def image(tiny_test_tree):
    return str(next((tiny_test_tree / "gan_a" / "1_fake").iterdir()))


def _copy(finished_run, tmp_path):
    target = tmp_path / "run"
    shutil.copytree(finished_run, target)
    return target


def _predict(capsys, run_dir, *images):
    code = main(["predict", "--run", str(run_dir), *map(str, images), "--device", "cpu"])
    captured = capsys.readouterr()
    return code, captured.out, [ln for ln in captured.err.splitlines() if ln.strip()]


def _edit_config(run_dir, change):
    path = run_dir / "config.json"
    config = json.loads(path.read_text())
    path.write_text(json.dumps(change(config)))


def _edit_state(run_dir, change):
    path = run_dir / "state.safetensors"
    tensors = load_file(str(path))
    save_file(change(dict(tensors)), str(path))


CONFIG_TAMPERING = {
    "not JSON": lambda d: (d / "config.json").write_text("{not json"),
    "a list": lambda d: (d / "config.json").write_text("[1, 2]"),
    "binary": lambda d: (d / "config.json").write_bytes(b"\xff\xfe\x00garbage"),
    "no detector": lambda d: _edit_config(
        d, lambda c: {k: v for k, v in c.items() if k != "detector"}
    ),
    "options a string": lambda d: _edit_config(
        d, lambda c: {**c, "detector": {"name": "spectral_logreg", "options": "x"}}
    ),
    "unknown detector": lambda d: _edit_config(
        d, lambda c: {**c, "detector": {**c["detector"], "name": "nope"}}
    ),
    "wrong option type": lambda d: _edit_config(
        d,
        lambda c: {
            **c,
            "detector": {
                "name": "spectral_logreg",
                "options": {**c["detector"]["options"], "bins": "many"},
            },
        },
    ),
    "addons not a list": lambda d: _edit_config(d, lambda c: {**c, "addons": {"a": 1}}),
    "seed a string": lambda d: _edit_config(d, lambda c: {**c, "spec": {**c["spec"], "seed": "x"}}),
}


def _scaled(tensors, key, factor):
    tensors[key] = tensors[key] * factor
    return tensors


STATE_TAMPERING = {
    "wrong shape": lambda t: {**t, "detector.head.weight": torch.zeros(1, 8)},
    "wrong dtype": lambda t: {**t, "detector.head.weight": t["detector.head.weight"].double()},
    "missing key": lambda t: {k: v for k, v in t.items() if k != "detector.head.bias"},
    "unknown owner": lambda t: {**t, "stranger.w": torch.zeros(2)},
    "unknown detector key": lambda t: {**t, "detector.extra": torch.zeros(2)},
    "NaN weights": lambda t: _scaled(t, "detector.head.weight", float("nan")),
    "infinite weights": lambda t: _scaled(t, "detector.head.bias", float("inf")),
}


@pytest.mark.parametrize("case", list(CONFIG_TAMPERING), ids=list(CONFIG_TAMPERING))
def test_tampered_config_is_one_line_exit_2(capsys, finished_run, tmp_path, image, case):
    run_dir = _copy(finished_run, tmp_path)
    CONFIG_TAMPERING[case](run_dir)
    code, out, err = _predict(capsys, run_dir, image)
    assert code == 2 and out == ""
    assert len(err) == 1 and err[0].startswith("bench: error:"), err


@pytest.mark.parametrize("case", list(STATE_TAMPERING), ids=list(STATE_TAMPERING))
def test_tampered_state_is_one_line_exit_2(capsys, finished_run, tmp_path, image, case):
    run_dir = _copy(finished_run, tmp_path)
    _edit_state(run_dir, STATE_TAMPERING[case])
    code, out, err = _predict(capsys, run_dir, image)
    assert code == 2 and out == ""
    assert len(err) == 1 and "damaged" in err[0], err


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(p.read_bytes()[:40]),  # truncated
        lambda p: p.write_bytes(b"\xff" * 8 + b"{}"),  # a header length of 2**64 - 1
        lambda p: p.write_bytes(b""),
    ],
    ids=["truncated", "huge-header", "empty"],
)
def test_unreadable_state_file_is_one_line_exit_2(capsys, finished_run, tmp_path, image, damage):
    run_dir = _copy(finished_run, tmp_path)
    damage(run_dir / "state.safetensors")
    code, _, err = _predict(capsys, run_dir, image)
    assert code == 2 and len(err) == 1 and "state.safetensors cannot be read" in err[0], err


def test_a_fifo_as_state_file_does_not_block(capsys, finished_run, tmp_path, image):
    run_dir = _copy(finished_run, tmp_path)
    (run_dir / "state.safetensors").unlink()
    os.mkfifo(run_dir / "state.safetensors")
    code, _, err = _predict(capsys, run_dir, image)
    assert code == 2 and len(err) == 1, err


def test_unreadable_images_are_listed_and_the_others_scored(capsys, finished_run, tmp_path, image):
    bomb = png_bomb(tmp_path / "bomb.png")
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    code, out, err = _predict(capsys, finished_run, image, bomb, fifo, image)
    assert code == 1  # every image scored or listed, and the exit status says some were not
    head, *rows = [line.split("\t") for line in out.splitlines()]
    assert head == ["p_fake", "path"]
    assert [r[1] for r in rows] == [image, str(bomb), str(fifo), image]
    assert rows[1][0] == rows[2][0] == ""
    assert rows[0][0] == rows[3][0] and 0.0 <= float(rows[0][0]) <= 1.0
    assert any("decompression bomb" in line for line in err)
    assert any("not a regular file" in line for line in err)


def test_scores_already_computed_are_printed_before_a_failure(
    capsys, finished_run, tmp_path, image, monkeypatch
):
    from bench.builtin.spectral_logreg import SpectralLogReg

    calls = []
    real = SpectralLogReg.predict_proba

    def second_call_breaks(self, batch):
        calls.append(1)
        return real(self, batch) if len(calls) == 1 else torch.tensor([float("nan")])

    monkeypatch.setattr(SpectralLogReg, "predict_proba", second_call_breaks)
    code, out, err = _predict(capsys, finished_run, image, image)
    assert code == 2
    head, line = out.splitlines()
    assert head == "p_fake\tpath" and line.split("\t")[1] == image
    assert len(err) == 1 and "not a probability" in err[0]


def test_a_saved_projector_that_is_not_one_is_refused():
    from bench.errors import BenchError
    from nsnet_plugin.nullspace import NullSpace

    ns = NullSpace("fixed")
    P = torch.eye(4)
    P[3, 3] = 0.0
    ns.load_state({"fixed_projector": P})  # a real projector loads
    with pytest.raises(BenchError, match="not a projector"):
        ns.load_state({"fixed_projector": torch.randn(4, 4)})
    with pytest.raises(BenchError, match="not a projector"):
        ns.load_state({"fixed_projector": torch.ones(4, 3)})
