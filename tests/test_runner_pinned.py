"""Issue 17 (mutation testing): what one ``bench.runner.run`` decides, writes and refuses.

The runs here are tiny (8 images of 32 x 32 per split, one epoch), with a detector and an
addon defined below and registered in a private registry, as an outside plugin would
register them; each records what the runner handed it. Expected values are written out by
hand (option tables, counts, log lines) or come from another module (``config_key`` of
``bench.run_identity``, safetensors, the leaderboard's index), never from the runner.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open

from bench import runner
from bench.builtin.spectral_logreg import SpectralLogReg
from bench.errors import BenchError
from bench.interfaces import Addon, Detector, TransformChain
from bench.options import OptionSpec
from bench.registry import Entry, Registry
from bench.runner import RunSpec, run
from tests.conftest import make_tree

HERE = "tests.test_runner_pinned"
TOY_DEFAULTS = {"input_size": 32, "bins": 4, "epochs": 3, "batch_size": 64, "lr": 0.05}


class Toy(SpectralLogReg):
    """The built-in spectral detector, recording what the runner handed it."""

    includes = {"inside": "use --opt toy.inside=true instead"}
    seen: list[Toy] = []
    planted = ""  # a failure planted outside the options (which key the configuration)

    def __init__(self, options: dict[str, Any]):
        super().__init__(options)
        self.ctx: Any = None
        self.seed_at_init = torch.initial_seed()
        self.fit_args: Any = None
        self.losses: list[float] = []
        Toy.seen.append(self)

    def setup(self, ctx) -> None:
        self.ctx = ctx
        self.config_at_setup = json.loads((ctx.run_dir / "config.json").read_text())
        super().setup(ctx)

    def describe(self) -> dict[str, Any]:
        return {"weights": "random", "bins": int(self.options["bins"])}

    def fit(self, train, ctx):
        self.fit_args = (train.batch_size, train.epochs, train.root, len(train.samples))
        self.losses = super().fit(train, ctx)
        if self.options.get("fail") == "fit":
            raise RuntimeError("planted failure in fit")
        return self.losses

    def training_step(self, batch):
        self.steps_taken = getattr(self, "steps_taken", 0) + 1
        if self.planted == "step2" and self.steps_taken == 2:
            raise RuntimeError("planted failure at step 2")
        return super().training_step(batch)

    def predict_proba(self, batch):
        skipped = self.ctx.run_dir / "skipped.txt"
        self.skipped_at_predict = skipped.read_text() if skipped.exists() else ""
        if "predict" in (self.options.get("fail"), self.planted):
            raise RuntimeError("planted\nfailure")
        return super().predict_proba(batch)


class ToyPrecise(Toy):
    """Toy with a ``precision`` option of its own."""


class Frozen(Detector):
    """A detector that learns nothing: p(fake) is the image's mean brightness."""

    trainable = False

    @property
    def input_size(self) -> int:
        return 32

    def base_transforms(self, train: bool) -> TransformChain:
        from bench.builtin.transforms import CenterCrop, ToTensor

        return TransformChain([CenterCrop(32), ToTensor()])

    def setup(self, ctx) -> None:
        self.ctx = ctx

    def predict_proba(self, batch):
        return batch["image"].float().mean(dim=(1, 2, 3)).clamp(0, 1)

    def trainable_state(self):
        return {}

    def load_trainable_state(self, state) -> None:
        pass


class FrozenFeatures(Frozen):
    provides = frozenset({"features"})
    made: list[FrozenFeatures] = []

    def __init__(self, options: dict[str, Any]):
        super().__init__(options)
        FrozenFeatures.made.append(self)


class Marker(Addon):
    """A features addon that scales nothing and remembers how it was used."""

    hook = "features"

    def __init__(self, options: dict[str, Any]):
        super().__init__(options)
        self.prepared: Any = None

    def prepare(self, detector, train, ctx) -> None:
        self.prepared = (detector, None if train is None else (train.batch_size, train.epochs))
        self.prepared_ctx = ctx

    def apply(self, features, batch, training):
        return features

    def state(self):
        return {"w": torch.arange(6.0).reshape(2, 3).t()}  # not contiguous


class Needy(Marker):
    requires = frozenset({"clip-text"})


def spec_of(options: dict[str, tuple[Any, str]]) -> dict[str, OptionSpec]:
    return {k: OptionSpec(default=v, type=t) for k, (v, t) in options.items()}


TOY_SPECS = spec_of(
    {
        "input_size": (32, "int"),
        "bins": (4, "int"),
        "epochs": (3, "int"),
        "batch_size": (64, "int"),
        "lr": (0.05, "float"),
        "fail": ("", "str"),
    }
)


@pytest.fixture(scope="module")
def registry() -> Registry:
    reg = Registry()
    precise = dict(TOY_SPECS, precision=OptionSpec(default="auto", type="str"))
    for kind, name, attr, specs, presets in (
        ("detector", "toy", "Toy", TOY_SPECS, {"quick": {"bins": 6}}),
        ("detector", "toyp", "ToyPrecise", precise, {}),
        ("detector", "frozen", "Frozen", spec_of({"gain": (1.0, "float")}), {}),
        ("detector", "frozenf", "FrozenFeatures", {}, {}),
        ("addon", "marker", "Marker", spec_of({"k": (2, "int")}), {"quick": {"k": 5}}),
        ("addon", "inside", "Marker", {}, {}),
        ("addon", "needy", "Needy", {}, {}),
    ):
        reg.add(Entry(kind, name, f"{HERE}:{attr}", "tests", specs, presets))
    return reg


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("runner-pinned")
    train = make_tree(root / "mydata" / "train", per_class=2, size=32)
    test = make_tree(root / "held", ("gan_c", "gan_d"), per_class=2, size=32, seed=1)
    return train, test


@pytest.fixture(autouse=True)
def _fresh():
    Toy.seen = []


def spec(tmp_path: Path, trees, **kw) -> RunSpec:
    train, test = trees
    base = dict(
        detector="toy",
        train=str(train),
        test=[str(test)],
        out=str(tmp_path / "out"),
        progress=False,
        workers=0,
        epochs=1,
        device="cpu",
    )
    base.update(kw)
    return RunSpec(**base)


def config_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "config.json").read_text(encoding="utf-8"))


def log_of(run_dir: Path) -> list[str]:
    """log.txt without the [HH:MM:SS] stamps."""
    lines = (run_dir / "log.txt").read_text(encoding="utf-8").splitlines()
    assert all(re.match(r"^\[\d\d:\d\d:\d\d\] ", line) for line in lines)
    return [line[11:] for line in lines]


STAMP = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"


# ------------------------------------------------------------------------ a whole run


def test_a_run_records_what_decides_it_and_what_it_did(tmp_path, trees, registry):
    from bench.cache import cache_root
    from bench.run_identity import config_key

    train, test = trees
    s = spec(
        tmp_path,
        trees,
        addons=["marker"],
        seed=3,
        batch_size=4,
        options={"toy": {"bins": 5}, "marker": {"k": 7}},
        seen=["gan_c"],
    )
    run_dir = run(s, registry)
    config = config_of(run_dir)
    toy_options = {**TOY_DEFAULTS, "bins": 5, "epochs": 1, "batch_size": 4, "fail": ""}
    assert config["label"] == "toy+marker" and config["train_name"] == "mydata/train"
    assert config["config"] == config_key(config["identity"])
    assert config["seed"] == 3 and config["spec"] == json.loads(json.dumps(asdict(s)))
    assert config["identity"]["options"] == {"toy": toy_options, "marker": {"k": 7}}
    assert config["identity"]["addons"] == ["marker"] and "precision" not in config["identity"]
    assert config["detector"] == {"name": "toy", "options": toy_options}
    assert config["addons"] == [{"name": "marker", "options": {"k": 7}}]
    assert config["test_sets"] == [
        {"name": "held", "path": str(test), "layout": "0_real/1_fake", "n": 8}
    ]
    assert config["seen"] == [[test.name, "gan_c"]]
    assert (config["device"], config["precision"], config["autocast"]) == ("cpu", "fp32", None)
    assert (config["workers"], config["torch"]) == (0, torch.__version__)
    assert (config["n_train"], config["n_test"], config["processes"]) == (8, 8, 1)
    assert config["perturbations"] == [] and config["status"] == "finished"
    assert re.match(STAMP, config["started_at"]) and re.match(STAMP, config["finished_at"])
    assert "resumed" not in config and "error" not in config
    assert config["describe"] == {"weights": "random", "bins": 5}
    toy = Toy.seen[0]
    assert config["loss_first"] == toy.losses[0] and config["loss_last"] == toy.losses[-1]
    assert len(toy.losses) == 2  # 8 images in batches of 4, one epoch
    assert config["train_seconds"] >= 0 and config["eval_seconds"] >= 0
    assert set(config["notes"]["data_wait"]) == {"train", "evaluate"}
    # what the detector and the addon were handed
    assert toy.seed_at_init == 3
    assert toy.fit_args == (4, 1, str(train), 8)
    ctx = toy.ctx
    assert (ctx.device, ctx.amp_dtype, ctx.seed, ctx.workers, ctx.progress) == (
        "cpu",
        None,
        3,
        0,
        False,
    )
    assert ctx.run_dir == run_dir and ctx.cache_dir == cache_root() and ctx.track is None
    assert ctx.processes.world == 1 and ctx.checkpoints is not None
    assert ctx.captions == {}
    # config.json is there from the start, saying the run is running
    assert toy.config_at_setup["status"] == "running"
    assert toy.config_at_setup["config"] == config["config"]
    marker = toy.feature_hooks[0]
    assert isinstance(marker, Marker) and marker.options == {"k": 7}
    assert marker.prepared == (toy, (4, 1)) and marker.prepared_ctx is ctx
    assert "robustness_seconds" not in config  # no sweep asked for
    # the log
    lines = log_of(run_dir)
    assert lines[0] == (
        f"run {run_dir.name}: toy+marker (config {config['config']}, seed 3) on cpu; "
        "train mydata/train (8 images), test 8 images in 1 set(s)"
    )
    assert f"test generators seen in training: {test.name}/gan_c" in lines
    assert "toy: weights = random" in lines and "toy: bins = 5" in lines
    assert any(line.startswith("epoch 1/1: mean loss ") for line in lines)  # ctx.log
    # the state: the detector's trainable state and the addon's, contiguous, on the CPU
    with safe_open(run_dir / "state.safetensors", "pt") as fh:
        keys = set(fh.keys())
        assert fh.metadata()["label"] == "toy+marker"
        assert torch.equal(fh.get_tensor("addon0.w"), torch.arange(6.0).reshape(2, 3).t())
    assert keys == {f"detector.{k}" for k in toy.trainable_state()} | {"addon0.w"}
    # the leaderboard row is this run's
    from bench import leaderboard

    (entry,) = leaderboard.read_index(tmp_path / "out")
    assert (entry["config"], entry["seed"], entry["label"], entry["run_id"]) == (
        config["config"],
        "3",
        "toy+marker",
        run_dir.name,
    )
    assert entry["train"] == "mydata/train"


def test_a_detector_that_learns_nothing_runs_on_a_test_set_alone(tmp_path, trees, registry):
    s = spec(tmp_path, trees, detector="frozen", train=None, epochs=5, batch_size=3)
    run_dir = run(s, registry)
    config = config_of(run_dir)
    assert config["detector"]["options"] == {"gain": 1.0}  # epochs/batch_size: not its options
    assert config["train_name"] == "-" and config["n_train"] == 0
    assert "loss_first" not in config and "train_seconds" not in config
    assert log_of(run_dir)[0].endswith("on cpu; train - (0 images), test 8 images in 1 set(s)")
    with safe_open(run_dir / "state.safetensors", "pt") as fh:
        assert list(fh.keys()) == []


def test_a_named_run_with_a_named_training_set(tmp_path, trees, registry):
    s = spec(tmp_path, trees, name="mine", train_name="T1", precision="fp32", preset="quick")
    run_dir = run(s, registry)
    config = config_of(run_dir)
    assert (config["label"], config["train_name"]) == ("mine", "T1")
    assert config["identity"]["precision"] == "fp32"  # toy has no precision option
    assert config["detector"]["options"]["bins"] == 6  # the preset's
    assert run_dir.name.endswith("-mine_T1-" + run_dir.name[-4:])


def test_a_failure_is_recorded_and_raised(tmp_path, trees, registry, monkeypatch):
    s = spec(tmp_path, trees)
    monkeypatch.setattr(Toy, "planted", "predict")
    with pytest.raises(RuntimeError, match="planted"):
        run(s, registry)
    monkeypatch.setattr(Toy, "planted", "")
    (run_dir,) = (tmp_path / "out" / "runs").iterdir()
    config = config_of(run_dir)
    assert config["status"] == "failed" and config["error"] == "RuntimeError: planted failure"
    assert set(config["notes"]["data_wait"]) == {"train"}  # what it did until then
    assert config["loss_first"] == Toy.seen[0].losses[0]
    assert not (tmp_path / "out" / "leaderboard_index.csv").exists()
    # the folder is not left locked: a resume can take it (the same configuration)
    again = spec(tmp_path, trees)
    run_dir2 = run(again, registry, resume=run_dir)
    assert run_dir2 == run_dir
    config2 = config_of(run_dir)
    assert config2["status"] == "finished" and config2["started_at"] == config["started_at"]
    assert len(config2["resumed"]) == 1 and re.match(STAMP, config2["resumed"][0])
    assert f"resuming run {run_dir.name} (it stopped with status failed)" in log_of(run_dir)


def test_a_resume_with_other_options_is_refused(tmp_path, trees, registry):
    s = spec(tmp_path, trees, options={"toy": {"fail": "fit"}})
    with pytest.raises(RuntimeError, match="planted failure in fit"):
        run(s, registry)
    (run_dir,) = (tmp_path / "out" / "runs").iterdir()
    old = config_of(run_dir)["config"]
    changed = spec(tmp_path, trees, options={"toy": {"bins": 7}})
    with pytest.raises(BenchError) as err:
        run(changed, registry, resume=run_dir)
    assert str(err.value).startswith(
        f"--resume {run_dir}: its data or options changed since it started (configuration "
        f"{old}, now "
    )
    assert str(err.value).endswith("); start a new run instead")


def test_a_config_that_cannot_be_written_leaves_no_run_folder(
    tmp_path, trees, registry, monkeypatch
):
    def full(path, data):
        raise OSError("disk full")

    monkeypatch.setattr(runner, "write_json", full)
    with pytest.raises(OSError, match="disk full"):
        run(spec(tmp_path, trees), registry)
    assert list((tmp_path / "out" / "runs").iterdir()) == []


def test_runs_are_refused_before_any_work(tmp_path, trees, registry):
    with pytest.raises(BenchError, match=r"^nothing to evaluate: give --test PATH"):
        run(spec(tmp_path, trees, test=[]), registry)
    with pytest.raises(BenchError, match=r"^detector 'toy' must be trained: give --train PATH$"):
        run(spec(tmp_path, trees, train=None), registry)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ resolve_components


def resolve(registry, **kw):
    return runner.resolve_components(registry, RunSpec(**{"detector": "toy", **kw}))


def test_resolve_merges_defaults_preset_options_and_flags(registry):
    r = resolve(
        registry,
        addons=["marker"],
        preset="quick",
        options={"toy": {"lr": 0.5}, "marker": {}},
        epochs=2,
        batch_size=8,
    )
    assert r.detector_cls is Toy and r.addon_classes == [Marker]
    assert r.detector_options == {
        **TOY_DEFAULTS,
        "bins": 6,
        "lr": 0.5,
        "epochs": 2,
        "batch_size": 8,
        "fail": "",
    }
    assert r.addon_options == [{"k": 5}]
    assert r.sweep.items == []
    plain = resolve(registry, addons=["marker"])
    assert plain.detector_options == {**TOY_DEFAULTS, "fail": ""}
    assert plain.addon_options == [{"k": 2}]


def test_the_precision_flag_wins_where_the_detector_has_the_option(registry):
    assert resolve(registry, detector="toyp").detector_options["precision"] == "auto"
    assert resolve(registry, detector="toyp", precision="bf16").detector_options["precision"] == (
        "bf16"
    )
    assert "precision" not in resolve(registry, precision="bf16").detector_options


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"addons": ["marker", "marker"]}, r"^addon listed twice: marker marker$"),
        (
            {"addons": ["marker"], "options": {"ghost": {}}},
            r"^--opt names 'ghost', which is not part of this run "
            r"\(components: marker, toy\)$",
        ),
        (
            {"addons": ["inside"]},
            r"^detector 'toy' already has inside built in, so --addon inside would do "
            r"nothing or do it twice: use --opt toy.inside=true instead$",
        ),
        ({"addons": ["needy"]}, r"^addon 'needy' needs 'clip-text'"),
        ({"detector": "frozen", "addons": ["marker"]}, r"^addon 'marker' needs 'features'"),
        ({"options": {"toy": {"batch_size": 0}}}, r"^--batch-size \(batch_size\) must be"),
        ({"options": {"toy": {"epochs": 0}}}, r"^--epochs \(epochs\) must be"),
        ({"options": {"marker": {"k": 1}}}, r"^--opt names 'marker'"),
    ],
)
def test_resolve_refuses_in_one_line(registry, kw, message):
    with pytest.raises(BenchError, match=message):
        resolve(registry, **kw)


def test_a_flag_for_an_option_a_trainable_detector_lacks_is_refused(registry):
    entry = registry.get("detector", "toy")
    no_epochs = Registry()
    specs = {k: v for k, v in TOY_SPECS.items() if k != "epochs"}
    no_epochs.add(Entry("detector", "toy", entry.target, "tests", specs, {}))
    with pytest.raises(BenchError, match=r"^detector 'toy' has no 'epochs' option$"):
        runner.resolve_components(no_epochs, RunSpec(detector="toy", epochs=2))
    frozen = resolve(registry, detector="frozen", epochs=2, batch_size=2)
    assert frozen.detector_options == {"gain": 1.0}


def test_presets_layer():
    entry = Entry("detector", "x", "m:a", "t", {}, {"p": {"a": 1}})
    assert runner.presets_layer(entry, "p") == {"a": 1}
    assert runner.presets_layer(entry, "other") == {} and runner.presets_layer(entry, None) == {}
    layer = runner.presets_layer(entry, "p")
    layer["a"] = 2
    assert entry.presets["p"] == {"a": 1}  # a copy: the catalogue is not changed


# ------------------------------------------------------------------------ the device


def test_choose_device_on_a_machine_without_accelerators(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert runner.choose_device("auto") == ("cpu", None)
    assert runner.choose_device("auto", None) == ("cpu", None)
    assert runner.choose_device("cpu", "bf16") == ("cpu", torch.bfloat16)
    with pytest.raises(BenchError, match=r"^--device cuda asked for, but no CUDA device"):
        runner.choose_device("cuda")
    with pytest.raises(BenchError, match=r"^--device cuda:1 asked for, but no CUDA device"):
        runner.choose_device("cuda:1")
    with pytest.raises(BenchError, match=r"^--device mps asked for, but MPS is not available$"):
        runner.choose_device("mps")
    with pytest.raises(
        BenchError, match=r"^--precision must be one of auto, bf16, fp32, got 'fp16'$"
    ):
        runner.choose_device("cpu", "fp16")


def test_choose_device_with_one_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert runner.choose_device("auto") == ("cuda", torch.bfloat16)
    assert runner.choose_device("cuda:0", "fp32") == ("cuda:0", None)
    with pytest.raises(BenchError, match=r"^--device cuda:1: this machine has 1 CUDA device\(s\)$"):
        runner.choose_device("cuda:1")


def test_choose_device_with_mps(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert runner.choose_device("mps") == ("mps", None)  # auto precision: bf16 only on CUDA


# ------------------------------------------------------------------------ names and ids


def test_dataset_name(tmp_path):
    for generic in ("train", "Training", "val", "TEST"):
        (tmp_path / "set" / generic).mkdir(parents=True)
        assert runner.dataset_name(str(tmp_path / "set" / generic)) == f"set/{generic}"
    (tmp_path / "progan").mkdir()
    assert runner.dataset_name(str(tmp_path / "progan")) == "progan"
    (tmp_path / "list.csv").write_text("x")
    assert runner.dataset_name(str(tmp_path / "list.csv")) == "list"
    assert runner.dataset_name(str(tmp_path / "a.b")) == "a.b"  # a folder keeps its dot
    assert runner.dataset_name("/train") == "train"  # no parent name to add
    odd = tmp_path / b"caf\xe9".decode("utf-8", "surrogateescape")
    assert runner.dataset_name(str(odd)) == "caf\\xe9"


def test_new_run_id(monkeypatch):
    """The stamp is UTC whatever the machine's time zone (here UTC+9)."""
    monkeypatch.setattr(runner.os, "urandom", lambda n: bytes(range(171, 171 + n)))
    monkeypatch.setenv("TZ", "Etc/GMT-9")
    time.tzset()
    try:
        check_run_id()
    finally:
        monkeypatch.undo()
        time.tzset()


def check_run_id():
    before = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    run_id = runner.new_run_id("a b/c+d", "x.y_z-1")
    after = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    stamp, rest = run_id[:15], run_id[16:]
    assert before <= stamp <= after and run_id[15] == "-"
    assert rest == "a-b-c+d_x-y_z-1-abac"


def test_run_spec_label():
    assert RunSpec(detector="d").label == "d"
    assert RunSpec(detector="d", addons=["a", "b"]).label == "d+a+b"
    assert RunSpec(detector="d", addons=["a"], name="n").label == "n"


def test_data_roots():
    class T:
        def __init__(self, root):
            self.root = root

    class D:
        tests = [T("/a"), T("/b")]

    assert runner.data_roots(D()) == ["/a", "/b"]


# ------------------------------------------------------------- more of a run's branches


def small_trees(root: Path) -> tuple[Path, Path]:
    """1 image per class and generator: 4 to train on, 4 to test."""
    train = make_tree(root / "tr", per_class=1, size=32)
    test = make_tree(root / "te", ("gan_c", "gan_d"), per_class=1, size=32, seed=1)
    return train, test


def test_progress_echoes_the_log_and_captions_reach_the_detector(
    tmp_path, registry, monkeypatch, capsys
):
    from bench.data import pipeline

    train, test = small_trees(tmp_path)
    (test / "captions.json").write_text(json.dumps({"gan_c/0_real/000.png": "a cat"}))
    (train / "captions.json").write_text(json.dumps({"gan_a/1_fake/000.png": "a dog"}))
    monkeypatch.setattr(pipeline, "default_workers", lambda: 0)
    s = spec(tmp_path, (train, test), progress=True, workers=None, metric="auc")
    run_dir = run(s, registry)
    toy = Toy.seen[0]
    assert toy.ctx.progress is True and config_of(run_dir)["workers"] == 0
    assert toy.ctx.captions == {
        str((test / "gan_c/0_real/000.png").resolve()): "a cat",
        str((train / "gan_a/1_fake/000.png").resolve()): "a dog",
    }
    err = capsys.readouterr().err
    assert f"] run {run_dir.name}: toy (config " in err
    assert (tmp_path / "out" / "leaderboard_auc.csv").is_file()
    assert not (tmp_path / "out" / "leaderboard_acc.csv").exists()


def test_timings_are_seconds_at_two_decimals(tmp_path, registry):
    run_dir = run(spec(tmp_path, small_trees(tmp_path)), registry)
    config = config_of(run_dir)
    for key in ("train_seconds", "eval_seconds"):
        assert isinstance(config[key], float)  # seconds, not rounded to a whole number
        assert 0 <= config[key] < 300 and config[key] == round(config[key], 2)


def test_unread_files_are_listed_with_their_split(tmp_path, registry):
    train, test = small_trees(tmp_path)
    (train / "gan_a" / "0_real" / "zz.png").write_bytes(b"not a png")
    (test / "notes.txt").write_text("not an image")
    run_dir = run(spec(tmp_path, (train, test)), registry)
    rows = [ln.split("\t") for ln in (run_dir / "skipped.txt").read_text().splitlines()]
    splits = {Path(r[1]).name: r[0] for r in rows}
    assert splits["zz.png"] == "train" and splits["notes.txt"] == "test"
    assert (
        log_of(run_dir).count("skipped 1 unreadable training images (listed in skipped.txt)") == 1
    )
    # skipped.txt was whole already while the test set was scored (written after training)
    seen_then = Toy.seen[0].skipped_at_predict
    assert "zz.png" in seen_then and "notes.txt" in seen_then


class Quiet(Toy):
    """Toy whose fit learns nothing and returns no losses."""

    def fit(self, train, ctx):
        self.fit_args = (train.batch_size, train.epochs, train.root, len(train.samples))
        return []


class Stopped(Toy):
    """Toy whose evaluation dies of its workers' death while a Ctrl-C is handled."""

    def predict_proba(self, batch):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise RuntimeError("DataLoader worker exited unexpectedly") from None


def test_a_detector_without_losses_or_batch_options(tmp_path):
    """A trainable detector declaring neither batch_size nor epochs: 32 and 1."""
    reg = Registry()
    reg.add(
        Entry(
            "detector",
            "quiet",
            f"{HERE}:Quiet",
            "tests",
            spec_of({"bins": (4, "int"), "input_size": (32, "int"), "lr": (0.05, "float")}),
            {},
        )
    )
    run_dir = run(spec(tmp_path, small_trees(tmp_path), detector="quiet", epochs=None), reg)
    config = config_of(run_dir)
    assert Toy.seen[0].fit_args[:2] == (32, 1)
    assert config["loss_first"] is None and config["loss_last"] is None


def test_a_stop_behind_a_worker_error_is_an_interruption(tmp_path):
    reg = Registry()
    reg.add(Entry("detector", "stopped", f"{HERE}:Stopped", "tests", TOY_SPECS, {}))
    with pytest.raises(KeyboardInterrupt) as info:
        run(spec(tmp_path, small_trees(tmp_path), detector="stopped"), reg)
    assert isinstance(info.value.__cause__, RuntimeError)
    (run_dir,) = (tmp_path / "out" / "runs").iterdir()
    config = config_of(run_dir)
    assert (config["status"], config["error"]) == ("interrupted", "SIGINT")


def test_a_frozen_detector_given_a_training_set_does_not_train(tmp_path, registry):
    train, test = small_trees(tmp_path)
    run_dir = run(spec(tmp_path, (train, test), detector="frozen"), registry)
    config = config_of(run_dir)
    assert config["n_train"] == 4 and config["train_name"] == "tr"
    assert "loss_first" not in config and "train_seconds" not in config


def test_a_checkpoint_is_kept_by_a_failed_run_and_removed_by_its_resume(
    tmp_path, registry, monkeypatch
):
    s = spec(tmp_path, small_trees(tmp_path), epochs=2, batch_size=2, checkpoint_every=1)
    monkeypatch.setattr(Toy, "planted", "predict")
    with pytest.raises(RuntimeError):
        run(s, registry)
    (run_dir,) = (tmp_path / "out" / "runs").iterdir()
    assert (run_dir / "checkpoint.pt").is_file()
    monkeypatch.setattr(Toy, "planted", "")
    run(s, registry, resume=run_dir)
    config = config_of(run_dir)
    assert config["resumed_at_step"]["steps_done"] == 4  # 2 epochs of 2 steps were done
    assert not (run_dir / "checkpoint.pt").exists()
    assert Toy.seen[-1].losses == Toy.seen[0].losses  # nothing left to train: restored


def test_a_resume_whose_config_cannot_be_written_keeps_its_folder(tmp_path, registry, monkeypatch):
    s = spec(tmp_path, small_trees(tmp_path))
    monkeypatch.setattr(Toy, "planted", "predict")
    with pytest.raises(RuntimeError):
        run(s, registry)
    (run_dir,) = (tmp_path / "out" / "runs").iterdir()

    def full(path, data):
        raise OSError("disk full")

    monkeypatch.setattr(runner, "write_json", full)
    with pytest.raises(OSError, match="disk full"):
        run(s, registry, resume=run_dir)
    assert (run_dir / "config.json").is_file()


class FakeTracker:
    """bench.tracking.Tracker's interface, recording what the run hands it."""

    made: list[FakeTracker] = []

    def __init__(self, name, run_dir, label, config):
        self.opened = (name, run_dir, label, config["status"], config["config"])
        self.logged: list[tuple] = []
        self.metrics: Any = None
        self.finished = False
        FakeTracker.made.append(self)

    def log(self, values, step=None):
        self.logged.append((dict(values), step))

    def log_metrics(self, table):
        self.metrics = table

    def finish(self):
        self.finished = True


def test_a_tracker_gets_the_losses_the_metrics_and_is_closed(tmp_path, registry, monkeypatch):
    import bench.tracking

    FakeTracker.made = []
    monkeypatch.setattr(bench.tracking, "Tracker", FakeTracker)
    s = spec(tmp_path, small_trees(tmp_path), batch_size=2, log_with="tensorboard")
    run_dir = run(s, registry)
    (tracker,) = FakeTracker.made
    config = config_of(run_dir)
    assert tracker.opened == ("tensorboard", run_dir, "toy", "running", config["config"])
    losses = [(v["train/loss"], step) for v, step in tracker.logged if "train/loss" in v]
    assert losses == [(loss, i + 1) for i, loss in enumerate(Toy.seen[0].losses)]
    assert list(tracker.metrics["kind"]) == ["generator", "generator", "mean"]
    assert tracker.finished
    monkeypatch.setattr(Toy, "planted", "predict")
    with pytest.raises(RuntimeError):
        run(s, registry)
    assert FakeTracker.made[1].finished and FakeTracker.made[1].metrics is None


def test_a_robustness_sweep_runs_after_the_clean_evaluation(tmp_path, registry):
    from bench.plugins import get_registry

    reg = Registry()
    reg.add(registry.get("detector", "frozen"))
    reg.add(get_registry().get("perturbation", "jpeg"))
    s = spec(tmp_path, small_trees(tmp_path), detector="frozen", perturb={"jpeg": {"levels": [50]}})
    run_dir = run(s, reg)
    config = config_of(run_dir)
    assert [p["name"] for p in config["perturbations"]] == ["jpeg"]
    seconds = config["robustness_seconds"]
    assert isinstance(seconds, float) and 0 <= seconds < 300 and seconds == round(seconds, 2)
    assert not any("robustness sweep runs in process 0" in line for line in log_of(run_dir))


def test_max_per_class_draws_with_the_runs_seed(tmp_path, trees, registry):
    """1 image per class of 2: the picks are sample_per_class's with the run's seed."""
    import csv

    from bench.data.layouts import read_dataset, sample_per_class

    train, test = trees
    run_dir = run(spec(tmp_path, trees, max_per_class=1, seed=3), registry)
    config = config_of(run_dir)
    assert (config["n_train"], config["n_test"]) == (4, 4)
    assert config["identity"]["max_per_class"] == 1
    assert config["identity"]["train"] == str(train)
    with open(run_dir / "predictions.csv", newline="") as fh:
        used = sorted(row["path"] for row in csv.DictReader(fh))
    picks = sorted(s.path for s in sample_per_class(read_dataset(str(test)), 1, seed=3))
    assert used == picks
    unseeded = sorted(s.path for s in sample_per_class(read_dataset(str(test)), 1, seed=None))
    assert picks != unseeded  # so the seed is seen to matter here


def test_a_detectors_own_precision_option_decides_and_keys_the_row(tmp_path, trees, registry):
    s = spec(tmp_path, trees, detector="toyp", options={"toyp": {"precision": "bf16"}})
    run_dir = run(s, registry)
    config = config_of(run_dir)
    assert (config["precision"], config["autocast"]) == ("bf16", "torch.bfloat16")
    assert Toy.seen[0].ctx.amp_dtype == torch.bfloat16
    flag = run(spec(tmp_path, trees, detector="toyp", precision="fp32"), registry)
    config = config_of(flag)
    assert config["precision"] == "fp32" and "precision" not in config["identity"]
    assert config["identity"]["options"]["toyp"]["precision"] == "fp32"


def test_a_quiet_run_writes_its_log_but_echoes_nothing(tmp_path, trees, registry, capsys):
    run_dir = run(spec(tmp_path, trees), registry)
    assert log_of(run_dir)[0].startswith(f"run {run_dir.name}: toy ")
    assert "] run " not in capsys.readouterr().err


def test_a_run_never_writes_into_another_runs_folder(tmp_path, trees, registry, monkeypatch):
    monkeypatch.setattr(runner, "new_run_id", lambda label, train: "same-id")
    first = run(spec(tmp_path, trees), registry)
    with pytest.raises(FileExistsError):
        run(spec(tmp_path, trees), registry)
    assert config_of(first)["status"] == "finished"


def utc_minutes(stamp: str) -> float:
    """Minutes between a config.json stamp and now, both read as UTC."""
    from datetime import UTC, datetime

    then = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return abs((datetime.now(UTC) - then).total_seconds()) / 60


def test_a_resume_keeps_the_first_start_and_adds_to_the_resumed_list(
    tmp_path, registry, monkeypatch
):
    """Stamps are UTC whatever the time zone (here UTC+9); a resume keeps the run's first
    start and appends its own time to the resumes before it."""
    monkeypatch.setenv("TZ", "Etc/GMT-9")
    time.tzset()
    try:
        s = spec(tmp_path, small_trees(tmp_path))
        monkeypatch.setattr(Toy, "planted", "predict")
        with pytest.raises(RuntimeError):
            run(s, registry)
        (run_dir,) = (tmp_path / "out" / "runs").iterdir()
        config = config_of(run_dir)
        assert utc_minutes(config["started_at"]) < 10
        config["started_at"], config["resumed"] = "2020-01-01T00:00:00Z", ["2021-01-01T00:00:00Z"]
        (run_dir / "config.json").write_text(json.dumps(config))
        monkeypatch.setattr(Toy, "planted", "")
        run(s, registry, resume=run_dir)
        config = config_of(run_dir)
        assert config["started_at"] == "2020-01-01T00:00:00Z"
        assert config["resumed"][0] == "2021-01-01T00:00:00Z" and len(config["resumed"]) == 2
        assert utc_minutes(config["resumed"][1]) < 10 and utc_minutes(config["finished_at"]) < 10
    finally:
        monkeypatch.undo()
        time.tzset()


def test_the_first_error_is_raised_even_when_the_cleanup_fails(
    tmp_path, trees, registry, monkeypatch
):
    def full(path, data):
        raise OSError("disk full")

    def stuck(path, ignore_errors=False):
        if not ignore_errors:
            raise PermissionError(f"cannot remove {path}")

    monkeypatch.setattr(runner, "write_json", full)
    monkeypatch.setattr(runner.shutil, "rmtree", stuck)
    with pytest.raises(OSError, match="disk full"):
        run(spec(tmp_path, trees), registry)


class BrokenTracker(FakeTracker):
    def __init__(self, *args):
        raise BenchError("the tracker cannot start")


def test_a_failure_before_the_context_exists_is_recorded(tmp_path, trees, registry, monkeypatch):
    import bench.tracking

    monkeypatch.setattr(bench.tracking, "Tracker", BrokenTracker)
    with pytest.raises(BenchError, match="the tracker cannot start"):
        run(spec(tmp_path, trees, log_with="tensorboard"), registry)
    (run_dir,) = (tmp_path / "out" / "runs").iterdir()
    config = config_of(run_dir)
    assert config["status"] == "failed" and "notes" not in config
    assert config["error"] == "BenchError: the tracker cannot start"


def test_entries_not_read_are_listed_from_the_start(tmp_path, registry):
    """No unreadable image: skipped.txt is the listing's own, written before any work."""
    train, test = small_trees(tmp_path)
    (test / "notes.txt").write_text("not an image")
    run_dir = run(spec(tmp_path, (train, test), seen=["gan_d", "gan_c"]), registry)
    rows = [ln.split("\t") for ln in (run_dir / "skipped.txt").read_text().splitlines()]
    assert [(r[0], Path(r[1]).name) for r in rows[1:]] == [("test", "notes.txt")]
    assert "test generators seen in training: te/gan_c, te/gan_d" in log_of(run_dir)


def test_the_loaders_get_the_runs_workers_and_seed(tmp_path, registry, monkeypatch):
    from bench.data import pipeline

    calls: list[dict] = []
    real = pipeline.make_loader

    def recording(samples, chain, **kw):
        calls.append(kw)
        return real(samples, chain, **kw)

    monkeypatch.setattr(pipeline, "make_loader", recording)
    run(spec(tmp_path, small_trees(tmp_path), seed=5), registry)
    assert calls and all((kw["workers"], kw["seed"]) == (0, 5) for kw in calls)
    assert not any("rank" in kw or "world" in kw for kw in calls)  # one process: no parts


def test_loader_workers_reach_the_detector_and_the_log(tmp_path, registry):
    train, test = small_trees(tmp_path)
    run_dir = run(spec(tmp_path, (train, test), detector="frozen", train=None, workers=1), registry)
    assert config_of(run_dir)["workers"] == 1
    assert any(
        line.startswith("data wait (evaluate): ") and line.endswith(", 1 loader workers)")
        for line in log_of(run_dir)
    )


def test_a_checkpoint_mid_epoch_is_where_a_resume_goes_on(tmp_path, registry, monkeypatch):
    """Every step checkpointed: a run dying at step 2 of 2 goes on after step 1."""
    s = spec(tmp_path, small_trees(tmp_path), batch_size=2, checkpoint_every=1)
    monkeypatch.setattr(Toy, "planted", "step2")
    with pytest.raises(RuntimeError, match="planted failure at step 2"):
        run(s, registry)
    (run_dir,) = (tmp_path / "out" / "runs").iterdir()
    monkeypatch.setattr(Toy, "planted", "")
    run(s, registry, resume=run_dir)
    assert config_of(run_dir)["resumed_at_step"]["steps_done"] == 1
    assert "resumed from checkpoint.pt: epoch 1, after batch 1 (1 steps done)" in log_of(run_dir)


def test_an_addon_without_a_training_set_is_prepared_with_none(tmp_path, trees, registry):
    FrozenFeatures.made = []
    run(spec(tmp_path, trees, detector="frozenf", addons=["marker"], train=None), registry)
    (detector,) = FrozenFeatures.made
    assert detector.feature_hooks[0].prepared == (detector, None)


class Diverged(Quiet):
    """A detector with its own loop whose first loss is NaN."""

    def fit(self, train, ctx):
        return [math.nan, 0.5]


def test_a_first_loss_that_is_not_finite_fails_the_run(tmp_path):
    reg = Registry()
    reg.add(Entry("detector", "diverged", f"{HERE}:Diverged", "tests", TOY_SPECS, {}))
    with pytest.raises(BenchError, match=r"^training diverged at the first step: loss is nan$"):
        run(spec(tmp_path, small_trees(tmp_path), detector="diverged"), reg)


def test_a_resume_without_a_checkpoint_says_it_starts_over(tmp_path, registry, monkeypatch):
    s = spec(tmp_path, small_trees(tmp_path), batch_size=2)
    monkeypatch.setattr(Toy, "planted", "step2")  # no checkpoint yet: epoch 1 is not over
    with pytest.raises(RuntimeError):
        run(s, registry)
    (run_dir,) = (tmp_path / "out" / "runs").iterdir()
    assert not (run_dir / "checkpoint.pt").exists()
    monkeypatch.setattr(Toy, "planted", "")
    run(s, registry, resume=run_dir)
    assert "resumed without a checkpoint: training started over" in log_of(run_dir)
