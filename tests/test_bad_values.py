"""Every bad flag, config value and option: one line, exit status 2, no run folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from bench.cli import main


def _bench(capsys, argv: list[str]) -> tuple[int, list[str]]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse exits itself
        code = exc.code
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.strip()]


@pytest.fixture
def base(tmp_path, tiny_tree, tiny_test_tree):
    out = tmp_path / "out"
    argv = ["run", "--detector", "spectral_logreg", "--train", str(tiny_tree)]
    argv += ["--test", str(tiny_test_tree), "--out", str(out), "--quiet", "--workers", "0"]
    return argv, out


FLAG_CASES = {
    "batch-size 0": (["--batch-size", "0"], "--batch-size"),
    "batch-size -5": (["--batch-size", "-5"], "--batch-size"),
    "batch-size 1e20": (["--batch-size", "1e20"], "--batch-size"),
    "batch-size 10**20": (["--batch-size", "100000000000000000000"], "--batch-size"),
    "epochs 0": (["--epochs", "0"], "--epochs"),
    "epochs -3": (["--epochs", "-3"], "--epochs"),
    "workers -1": (["--workers", "-1"], "--workers"),
    "seed 1e23": (["--seed", "1e23"], "--seed"),
    "seed 10**23": (["--seed", "100000000000000000000000"], "--seed"),
    "seed -1": (["--seed", "-1"], "--seed"),
    "device foo": (["--device", "foo"], "--device"),
    "device meta": (["--device", "meta"], "--device"),
    "device gpu": (["--device", "gpu"], "--device"),
    "preset dmeo": (["--preset", "dmeo"], "did you mean 'demo'"),
    "max-per-class 0": (["--max-per-class", "0"], "--max-per-class"),
    "max-per-class -2": (["--max-per-class", "-2"], "--max-per-class"),
    "metric foo": (["--metric", "foo"], "--metric"),
    "opt without =": (["--opt", "spectral_logreg.bins"], "--opt"),
}


@pytest.mark.parametrize("case", list(FLAG_CASES), ids=list(FLAG_CASES))
def test_bad_flags_exit_2_in_one_line_before_a_run_folder(capsys, base, case):
    argv, out = base
    extra, expected = FLAG_CASES[case]
    code, lines = _bench(capsys, argv + extra)
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("bench: error:"), lines
    assert expected in lines[0]
    assert not (out / "runs").exists()


def test_cuda_without_a_gpu_fails_before_a_run_folder(capsys, base):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    argv, out = base
    code, lines = _bench(capsys, [*argv, "--device", "cuda:3"])
    assert code == 2 and len(lines) == 1 and "CUDA" in lines[0]
    assert not (out / "runs").exists()


def test_out_that_is_a_file_or_under_a_file_is_refused(capsys, base, tmp_path):
    argv, _ = base
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    for out, words in ((a_file, "is a file"), (a_file / "sub", "which is a file")):
        code, lines = _bench(capsys, [*argv, "--out", str(out)])
        assert code == 2 and len(lines) == 1 and words in lines[0], lines
    assert a_file.read_text() == "x"


def _read_only_folder(tmp_path):
    """A folder this process cannot write into: chmod for users, a read-only mount for root."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o500)
        return folder, lambda: folder.chmod(0o700)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)])
    if done.returncode != 0:
        pytest.skip("root, and no read-only mount possible here")
    return folder, lambda: subprocess.run(["umount", str(folder)])


def test_unwritable_out_is_refused(capsys, base, tmp_path):
    argv, _ = base
    folder, undo = _read_only_folder(tmp_path)
    try:
        code, lines = _bench(capsys, [*argv, "--out", str(folder / "results")])
    finally:
        undo()
    assert code == 2 and len(lines) == 1 and "no permission to write" in lines[0], lines


CONFIG_CASES = {
    "options = 5": ("options = 5", "'options' must be tables"),
    "options.x = 5": ("[options]\nspectral_logreg = 5", "'options' must be tables"),
    "test = 5": ("test = 5", "'test' must be a path"),
    "test = [1, 2]": ("test = [1, 2]", "'test' must be a path"),
    "seed = 'x'": ('seed = "x"', "'seed' must be a whole number"),
    "workers = '2'": ('workers = "2"', "'workers' must be a whole number"),
    "detector = 7": ("detector = 7", "'detector' must be a string"),
    "addons = 5": ("addons = 5", "'addons' must be a name"),
    "preset = 5": ("preset = 5", "'preset' must be a string"),
    "preset unknown": ('preset = "dmeo"', "unknown preset 'dmeo'"),
    "metric unknown": ('metric = "accuracy"', "--metric"),
    "batch_size = 0": ("batch_size = 0", "--batch-size"),
    "batch_size = 1.5": ("batch_size = 1.5", "'batch_size' must be a whole number"),
    "epochs = true": ("epochs = true", "'epochs' must be a whole number"),
    "unknown key": ("epoch = 3", "unknown key(s)"),
    "not TOML": ("detector = ", "not valid TOML"),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES), ids=list(CONFIG_CASES))
def test_config_files_of_the_wrong_shape_exit_2(capsys, tmp_path, tiny_tree, case):
    text, expected = CONFIG_CASES[case]
    config = tmp_path / "run.toml"
    head = "" if text.startswith("detector") else 'detector = "spectral_logreg"\n'
    config.write_text(f'{head}train = "{tiny_tree}"\n{text}\n', encoding="utf-8")
    out = tmp_path / "out"
    code, lines = _bench(capsys, ["run", "--config", str(config), "--out", str(out)])
    assert code == 2 and len(lines) == 1, lines
    assert expected in lines[0]
    assert not (out / "runs").exists()


def test_a_folder_or_non_utf8_bytes_as_config_exit_2(capsys, tmp_path):
    bad = tmp_path / "latin1.toml"
    bad.write_bytes('detector = "d\xe9tecteur"\n'.encode("latin-1"))
    for config in (tmp_path, bad):
        code, lines = _bench(capsys, ["run", "--config", str(config)])
        assert code == 2 and len(lines) == 1 and str(config) in lines[0], lines


def test_bad_values_are_refused_without_importing_torch(tmp_path):
    """Flag values fail before the heavy imports: the check costs nothing."""
    probe = (
        "import sys\nfrom bench.cli import main\n"
        "code = main(['run', '--detector', 'spectral_logreg', '--batch-size', '0'])\n"
        "print(code, 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.stdout.split() == ["2", "False"], done.stderr


OPTION_CASES = {
    "lr=nan": ("spectral_logreg.lr=nan", "finite number"),
    "lr=-1": ("spectral_logreg.lr=-1", "must be > 0"),
    "lr=inf": ("spectral_logreg.lr=inf", "finite number"),
    "bins=-4": ("spectral_logreg.bins=-4", "must be ≥ 2"),
    "input_size=0": ("spectral_logreg.input_size=0", "must be ≥ 16"),
    "input_size absurd": ("spectral_logreg.input_size=1000000000", "must be ≤ 4096"),
    "epochs=0 by --opt": ("spectral_logreg.epochs=0", "must be ≥ 1"),
    "bins=1.5": ("spectral_logreg.bins=1.5", "must be an integer"),
    "unknown key": ("spectral_logreg.bnis=3", "did you mean 'spectral_logreg.bins'"),
}


@pytest.mark.parametrize("case", list(OPTION_CASES), ids=list(OPTION_CASES))
def test_bad_option_values_exit_2_before_a_run_folder(capsys, base, case):
    argv, out = base
    opt, expected = OPTION_CASES[case]
    code, lines = _bench(capsys, [*argv, "--opt", opt])
    assert code == 2 and len(lines) == 1, lines
    assert expected in lines[0]
    assert not (out / "runs").exists()


@pytest.mark.parametrize(
    "opt, expected",
    [
        ("nsnet.nullspace=fixd", "did you mean 'fixed'"),
        ("nsnet.lr=-1", "must be > 0"),
        ("nsnet.lora_dropout=1", "must be < 1"),
    ],
)
def test_bad_nsnet_options_exit_2_before_any_work(capsys, tmp_path, opt, expected):
    """No data given: refused before the demo benchmark would be built."""
    out = tmp_path / "out"
    code, lines = _bench(capsys, ["run", "--detector", "nsnet", "--opt", opt, "--out", str(out)])
    assert code == 2 and len(lines) == 1 and expected in lines[0], lines
    assert not out.exists()


def test_the_safe_wavelet_declaration_admits_exactly_pywavelets_discrete_wavelets():
    import re

    import pywt

    from bench.plugins import get_registry

    pattern = get_registry().get("detector", "safe").specs["wavelet"].pattern
    assert all(re.fullmatch(pattern, name) for name in pywt.wavelist(kind="discrete"))
    assert not any(re.fullmatch(pattern, n) for n in ("db0", "db39", "bior1.2", "morl", "foo"))


@pytest.mark.parametrize(
    "argv",
    [
        ["table", "table4_ablation", "--device", "meta"],
        ["table", "table4_ablation", "--workers", "-1"],
        ["data", "demo", "--seed", "-1"],
        ["predict", "--run", ".", "x.png", "--device", "gpu"],
    ],
    ids=["table-device", "table-workers", "data-seed", "predict-device"],
)
def test_other_commands_check_their_flags_first(capsys, argv):
    code, lines = _bench(capsys, argv)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("bench: error:"), lines


def test_a_damaged_caption_sidecar_is_one_line_before_a_run_folder(capsys, tmp_path, tiny_tree):
    train = tmp_path / "train"
    shutil.copytree(tiny_tree, train)
    (train / "captions.json").write_text("{not json")
    out = tmp_path / "out"
    argv = ["run", "--detector", "spectral_logreg", "--train", str(train), "--test", str(train)]
    code, lines = _bench(capsys, [*argv, "--out", str(out), "--workers", "0"])
    assert code == 2 and len(lines) == 1 and "caption sidecar" in lines[0], lines
    assert not (out / "runs").exists()
