"""Issue 17 (mutation testing): caption providers, files, the BLIP cache and its processes.

BLIP itself is replaced by a stand-in whose captions are a known function of the pixels
(and whose calls are recorded), so what each path must return is known by hand; the
several-process path runs with a scripted stand-in for ``bench.distributed.Processes``.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import bench.backbones.hub as hub
from bench.data.layouts import Sample
from bench.errors import BenchError
from bench.interfaces import RunContext
from nsnet_plugin.captions import (
    DEFAULT_BLIP,
    BlipCaptions,
    CaptionBank,
    FileCaptions,
    PromptCaptions,
    _append_jsonl,
    _read_jsonl,
    blip_source,
    captions_for,
    class_name,
    load_blip,
    make_provider,
    read_caption_file,
)


# ----------------------------------------------------------------------------- prompts
def test_class_name_is_empty_where_the_layout_names_no_class():
    assert class_name("x.png") == ""
    assert class_name("1_fake/x.png") == ""
    assert class_name("train/ai/x.png") == ""  # only a split folder above the label
    assert class_name("red_car/0_real/x.png") == "red_car"


def test_prompt_templates_are_checked_in_one_line():
    fields = "it may use {class}, {generator}, {label}"
    with pytest.raises(BenchError) as info:
        PromptCaptions("a {}")
    assert str(info.value) == f"prompt_template 'a {{}}' uses an unnamed field; {fields}"
    with pytest.raises(BenchError) as info:
        PromptCaptions("a {zz} {thing}")
    assert str(info.value) == f"prompt_template 'a {{zz}} {{thing}}' uses thing, zz; {fields}"


def test_prompt_caption_fields():
    prompt = PromptCaptions("{label} {class} by {generator}")
    fake = Sample("/d/red_car/1_fake/x.png", 1, "big_gan")
    real = Sample("/d/red_car/0_real/y.png", 0, "big_gan")
    assert prompt([fake, real]) == {
        fake.path: "fake red car by big gan",
        real.path: "real red car by big gan",
    }


# ----------------------------------------------------------------------------- files
def test_json_caption_files_that_do_not_fit_are_refused_in_one_line(tmp_path):
    expected = 'expected {"path": "caption", ...} or [{"path": ..., "caption": ...}, ...]'
    for text in ("5", '[{"path": "a.png"}]', '"a string"'):
        file = tmp_path / "c.json"
        file.write_text(text)
        with pytest.raises(BenchError) as info:
            read_caption_file(file)
        assert str(info.value) == f"caption file {file} is not readable: {expected}"
    (tmp_path / "c.json").write_text("[]")
    assert read_caption_file(tmp_path / "c.json") == {}


def test_csv_headers_in_any_case_and_order_and_a_bom(tmp_path):
    file = tmp_path / "c.csv"
    file.write_bytes("\ufeffCaption, PATH\nhello,a.png\n".encode())
    assert read_caption_file(file) == {str(tmp_path / "a.png"): "hello"}
    # a header needs both names; otherwise the first row is data
    file.write_text("path,text\na.png,hello\n")
    assert read_caption_file(file) == {
        str(tmp_path / "path"): "text",
        str(tmp_path / "a.png"): "hello",
    }


def test_csv_keeps_line_breaks_inside_quoted_captions(tmp_path):
    file = tmp_path / "c.csv"
    file.write_bytes(b'path,caption\r\na.png,"one\r\ntwo"\r\n')
    assert read_caption_file(file) == {str(tmp_path / "a.png"): "one\r\ntwo"}


def test_csv_rows_without_a_caption_are_named(tmp_path):
    file = tmp_path / "c.csv"
    file.write_text("path,caption\na.png,fine\nb.png\n")
    with pytest.raises(BenchError) as info:
        read_caption_file(file)
    assert str(info.value) == (
        f"caption file {file} is not readable: row 2 has 1 column(s); expected path,caption"
    )


def test_file_captions_default_to_the_runs_sidecars_only(tmp_path):
    sample = Sample(str(tmp_path / "a.png"), 0, "g")
    ctx = RunContext(captions={sample.path: "from the sidecar"})
    assert FileCaptions()([sample], ctx) == {sample.path: "from the sidecar"}


# ----------------------------------------------------------------------------- choice
def test_make_provider_configures_each_kind():
    provider = make_provider({}, "x")
    assert isinstance(provider, FileCaptions) and provider.caption_file == ""
    provider = make_provider({"captions": "file", "caption_file": "c.json"}, "x")
    assert provider.caption_file == "c.json"
    assert make_provider({"captions": "file", "caption_file": None}, "x").caption_file == ""
    provider = make_provider({"captions": "prompt", "prompt_template": "a {label}"}, "x")
    assert isinstance(provider, PromptCaptions) and provider.template == "a {label}"
    assert make_provider({"captions": "prompt"}, "x").template == "a photo of a {class}"
    provider = make_provider(
        {
            "captions": "blip",
            "caption_model": "org/m",
            "caption_batch_size": 5,
            "caption_max_tokens": 7,
        },
        "nsnet",
    )
    assert isinstance(provider, BlipCaptions)
    assert (provider.model_id, provider.batch_size, provider.max_new_tokens) == ("org/m", 5, 7)
    assert provider.option == "nsnet.caption_model"
    provider = make_provider({"captions": "blip"}, "nullspace")
    assert (provider.model_id, provider.batch_size, provider.max_new_tokens) == (
        DEFAULT_BLIP,
        32,
        30,
    )
    assert DEFAULT_BLIP == "Salesforce/blip-image-captioning-base"
    with pytest.raises(BenchError) as info:
        make_provider({"captions": "gpt"}, "x")
    assert str(info.value) == "option x.captions must be one of file, blip, prompt, got 'gpt'"


def test_captions_for_names_the_component_and_its_defaults(tmp_path):
    samples = [Sample(str(tmp_path / f"{i}.png"), i % 2, "g") for i in range(3)]
    ctx = RunContext(captions={samples[0].path: "known"})
    with pytest.raises(BenchError) as info:
        captions_for(samples, {}, ctx, "nsnet", what="test")
    assert str(info.value) == (
        f"2 of 3 test images have no caption from nsnet.captions='file' (e.g. "
        f"{samples[1].path}); give --opt nsnet.caption_file=FILE, --opt nsnet.captions=prompt "
        "(or blip), or --opt nsnet.missing_captions=prompt"
    )
    with pytest.raises(BenchError) as info:
        captions_for(samples, {"captions": "gpt"}, ctx, "nsnet")
    assert str(info.value).startswith("option nsnet.captions must be one of")
    with pytest.raises(BenchError) as info:
        captions_for(samples, {"missing_captions": "skip"}, ctx, "nullspace")
    assert str(info.value) == (
        "option nullspace.missing_captions must be one of error, prompt, got 'skip'"
    )
    filled = captions_for(
        samples, {"missing_captions": "prompt", "prompt_template": "a {label} one"}, ctx, "x"
    )
    assert filled == {
        samples[0].path: "known",
        samples[1].path: "a fake one",
        samples[2].path: "a real one",
    }


# ----------------------------------------------------------------------------- the bank
def test_caption_bank_edges():
    bank = CaptionBank(lambda texts: torch.ones(len(texts), 2))
    assert len(bank) == 0
    bank.set({"a": "x"})
    bank.add({"b": "y"})
    assert bank.captions == {"a": "x", "b": "y"} and len(bank) == 2
    with pytest.raises(BenchError) as info:
        bank.for_paths(["a", "q", "r"])
    assert str(info.value) == (
        "no caption for image q (2 in this batch): captions are computed in fit()/prepare() "
        "for the training samples and, for the caption/own evaluation readings, in "
        "plan_evaluation() for the test samples"
    )
    nan = CaptionBank(lambda texts: torch.full((len(texts), 2), float("nan")))
    nan.set({"a": "x"})
    with pytest.raises(BenchError) as info:
        nan.distinct()
    assert str(info.value) == "the text tower returned NaN or inf for a caption"
    short = CaptionBank(lambda texts: torch.ones(1, 2))  # one row for two texts
    short.set({"a": "x", "b": "y"})
    with pytest.raises(ValueError):
        short.distinct()


# ----------------------------------------------------------------------------- the cache file
def test_jsonl_cache_appends_and_skips_only_bad_lines(tmp_path):
    file = tmp_path / "captions.jsonl"
    _append_jsonl(file, {"d1": "a cat"})
    _append_jsonl(file, {"d2": "caf\u00e9", "d3": "x"})
    lines = file.read_text(encoding="ascii").splitlines()
    assert [json.loads(line) for line in lines] == [
        {"sha256": "d1", "caption": "a cat"},
        {"sha256": "d2", "caption": "caf\u00e9"},
        {"sha256": "d3", "caption": "x"},
    ]
    with open(file, "a") as fh:
        fh.write('{"sha256": "d4", "capt\n[1]\n{"sha256": "d5"}\n')
    _append_jsonl(file, {"d6": "after the bad lines"})
    assert _read_jsonl(file) == {
        "d1": "a cat",
        "d2": "caf\u00e9",
        "d3": "x",
        "d6": "after the bad lines",
    }
    assert _read_jsonl(tmp_path / "none.jsonl") == {}


def test_blip_settings_defaults_and_cache_key(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    blip = BlipCaptions()
    assert (blip.model_id, blip.batch_size, blip.max_new_tokens) == (DEFAULT_BLIP, 32, 30)
    assert blip.option == "<detector>.caption_model"
    assert BlipCaptions(batch_size=0).batch_size == 1 and BlipCaptions(batch_size=1).batch_size == 1
    assert BlipCaptions(option="a.caption_model").option == "a.caption_model"
    assert blip.settings() == {"max_new_tokens": 30, "decoding": "greedy", "v": 1}
    file = blip.cache_file()
    assert file.name == "captions.jsonl" and file.parent.parent == tmp_path / "cache" / "captions"
    others = {BlipCaptions("org/other").cache_file(), BlipCaptions(max_new_tokens=9).cache_file()}
    assert file not in others and len(others) == 2
    folder = tmp_path / "models" / "blip"
    folder.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    by_folder = BlipCaptions(str(folder)).cache_file()
    assert BlipCaptions("models/blip").cache_file() == by_folder  # a folder by any spelling
    monkeypatch.chdir(folder)
    assert BlipCaptions("org/other").cache_file() in others  # a hub id is not a path


# ----------------------------------------------------------------------------- BLIP stand-in
class Processor:
    """Pixels: the image's mean grey level, repeated; decoding: that level, in words."""

    def __call__(self, images, return_tensors):
        assert return_tensors == "pt"
        level = float(np.asarray(images[0].convert("L"), dtype=np.float64).mean())
        return {"pixel_values": torch.full((1, 3, 2, 2), level)}

    def batch_decode(self, out, skip_special_tokens):
        suffix = "" if skip_special_tokens else " [SEP]"
        return [f"  level \n {int(v)}{suffix} " for v in out[:, 0].tolist()]


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, dtype=torch.float64))
        self.calls: list[dict] = []
        self.moved_to: list = []

    def to(self, device):
        self.moved_to.append(device)
        return self

    def generate(self, pixel_values, max_new_tokens):
        self.calls.append(
            {"n": len(pixel_values), "dtype": pixel_values.dtype, "max": max_new_tokens}
        )
        return pixel_values[:, 0, 0, :1].round().long()


def grey_images(folder: Path, levels: list[int]) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, level in enumerate(levels):
        path = folder / f"{i}.png"
        Image.fromarray(np.full((4, 4), level, np.uint8)).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))


class Loaders:
    """DataLoader that records num_workers and loads in this process."""

    def __init__(self, monkeypatch):
        import torch.utils.data as data

        self.workers: list[int] = []
        real = data.DataLoader
        record = self.workers

        class Recording(real):
            def __init__(self, dataset, **kwargs):
                record.append(kwargs.get("num_workers", 0))
                super().__init__(dataset, **{**kwargs, "num_workers": 0})

        monkeypatch.setattr(data, "DataLoader", Recording)


def test_blip_captions_one_process(tmp_path, cache, monkeypatch):
    loaders = Loaders(monkeypatch)
    paths = grey_images(tmp_path / "img", [10, 20, 10, 30])  # 0 and 2: the same content
    (tmp_path / "img" / "bad.png").write_bytes(b"not an image")
    samples = [Sample(str(tmp_path / "img" / "bad.png"), 0, "g")]
    samples += [Sample(p, 0, "g") for p in paths]
    model = Model()
    blip = BlipCaptions(
        "test/fake", batch_size=1, max_new_tokens=5, model=model, processor=Processor()
    )
    log: list[str] = []
    found = blip(samples, RunContext(device="cpu", workers=3, log=log.append))
    assert found == {
        paths[0]: "level 10",
        paths[1]: "level 20",
        paths[2]: "level 10",
        paths[3]: "level 30",
    }
    # the unreadable file skipped, the duplicate captioned once, one image per batch
    assert [c["n"] for c in model.calls] == [1, 1, 1] and blip.generate_calls == 3
    assert all(c["dtype"] == torch.float64 and c["max"] == 5 for c in model.calls)
    assert model.moved_to == ["cpu"] and loaders.workers == [3]
    assert log == [f"captioning 4 images with test/fake (cached in {blip.cache_file().parent})"]
    assert sorted(_read_jsonl(blip.cache_file()).values()) == ["level 10", "level 20", "level 30"]
    # a second run captions nothing, with or without a context
    model.calls.clear()
    assert blip(samples, None) == found and model.calls == []


def test_blip_uses_the_runs_device(tmp_path, cache):
    paths = grey_images(tmp_path / "img", [50])
    model = Model()
    blip = BlipCaptions("test/fake", model=model, processor=Processor())
    assert blip([Sample(paths[0], 0, "g")], RunContext(device="cpu:0")) == {paths[0]: "level 50"}
    assert model.moved_to == ["cpu:0"]


def test_a_model_that_answers_for_fewer_images_is_not_trusted(tmp_path, cache):
    class Short(Model):
        def generate(self, pixel_values, max_new_tokens):
            return super().generate(pixel_values, max_new_tokens)[:1]

    paths = grey_images(tmp_path / "img", [1, 2])
    blip = BlipCaptions("test/short", model=Short(), processor=Processor())
    with pytest.raises(ValueError):
        blip([Sample(p, 0, "g") for p in paths], None)


def test_a_processor_without_a_model_loads_both(monkeypatch):
    monkeypatch.setattr(hub, "cached_hub_file", lambda m, names: None)
    monkeypatch.setattr(hub, "hub_offline", lambda: True)
    with pytest.raises(BenchError, match="^BLIP captioner org/m is not on this machine"):
        BlipCaptions("org/m", model=Model(), processor=None)._load("cpu")


def test_images_blip_cannot_read_are_missing_under_the_blip_name(tmp_path, cache):
    samples = [Sample(str(tmp_path / "gone.png"), 0, "g")]
    with pytest.raises(BenchError) as info:
        captions_for(samples, {"captions": "blip"}, RunContext(), "nsnet")
    assert str(info.value).startswith(
        "1 of 1 training images have no caption from nsnet.captions='blip' (e.g. "
    )


def test_blip_device_and_workers_defaults(tmp_path, cache, monkeypatch):
    loaders = Loaders(monkeypatch)
    paths = grey_images(tmp_path / "img", [40])
    for i, ctx in enumerate([None, SimpleNamespace(device=None, workers=None, log=None)]):
        model = Model()
        blip = BlipCaptions(f"test/fake{i}", model=model, processor=Processor())
        assert blip([Sample(paths[0], 0, "g")], ctx) == {paths[0]: "level 40"}
        assert model.moved_to == ["cpu"]
    assert loaders.workers == [0, 0]


class Processes:
    """A scripted stand-in for bench.distributed.Processes (several processes)."""

    def __init__(self, rank: int, world: int, answers: list, others: list):
        self.rank, self.world, self.main, self.several = rank, world, rank == 0, True
        self.answers, self.others = answers, others
        self.broadcasts: list = []

    def broadcast(self, obj):
        self.broadcasts.append(obj)
        return self.answers.pop(0) if self.answers else obj

    def all_gather(self, obj):
        return [*self.others[: self.rank], obj, *self.others[self.rank :]]


def test_blip_process_zero_captions_its_share_and_writes_everyones(tmp_path, cache, monkeypatch):
    loaders = Loaders(monkeypatch)
    paths = grey_images(tmp_path / "img", [1, 2, 3, 4])
    samples = [Sample(p, 0, "g") for p in paths]
    model = Model()
    blip = BlipCaptions("test/fake", model=model, processor=Processor())
    procs = Processes(0, 2, answers=[], others=[{"ffff": "from rank 1"}])
    found = blip(samples, RunContext(processes=procs, device="cpu:0", workers=2))
    assert model.moved_to == ["cpu:0"] and loaders.workers == [2]
    # each caption once in the file: its own as captioned, rank 1's after the gather
    assert len(blip.cache_file().read_text().splitlines()) == 3
    # rank 0 of 2 captions items 0 and 2; rank 1's captions join the cache file
    assert [c["n"] for c in model.calls] == [2]
    assert found == {paths[0]: "level 1", paths[2]: "level 3"}  # 1 and 3: rank 1's digests
    cached = sorted(_read_jsonl(blip.cache_file()).values())
    assert cached == ["from rank 1", "level 1", "level 3"]
    assert len(procs.broadcasts) == 2  # the work list, then the captions


def test_blip_other_processes_write_nothing_and_return_process_zeros(tmp_path, cache):
    paths = grey_images(tmp_path / "img", [5, 6, 7])
    samples = [Sample(p, 0, "g") for p in paths]
    model = Model()
    blip = BlipCaptions("test/fake", model=model, processor=Processor())
    from bench.cache import file_digests

    digests = file_digests(paths)
    zeros_todo = {paths[1]: digests[1], paths[2]: digests[2]}  # what process 0 decided
    zeros_found = {paths[0]: "process 0's answer"}
    procs = Processes(1, 2, answers=[zeros_todo, zeros_found], others=[{"aaaa": "rank 0"}])
    assert blip(samples, RunContext(processes=procs)) == zeros_found
    assert [c["n"] for c in model.calls] == [1]  # rank 1 of 2: the second of two items
    assert model.moved_to == ["cpu"]
    assert not blip.cache_file().exists() or _read_jsonl(blip.cache_file()) == {}
    assert procs.broadcasts[1] == {paths[2]: "level 7"}  # its own view, sent for process 0's


# ----------------------------------------------------------------------------- where BLIP is
def test_blip_source_local_folder_cache_offline_and_unreachable(tmp_path, monkeypatch):
    folder = tmp_path / "blip"
    folder.mkdir()
    assert blip_source(str(folder)) == (str(folder), {})
    monkeypatch.setenv("HOME", str(tmp_path))
    assert blip_source("~/blip") == (str(folder), {})

    asked = []
    monkeypatch.setattr(hub, "hf_cache_dir", lambda: "/hub/cache")
    monkeypatch.setattr(hub, "cached_hub_file", lambda m, names: asked.append(names) or "/x")
    assert blip_source("org/m") == ("org/m", {"cache_dir": "/hub/cache", "local_files_only": True})
    assert asked == [["config.json"]]

    monkeypatch.setattr(hub, "cached_hub_file", lambda m, names: None)
    monkeypatch.setattr(hub, "hub_offline", lambda: True)
    with pytest.raises(BenchError) as info:
        blip_source("org/m", "nullspace.caption_model")
    assert str(info.value) == (
        "BLIP captioner org/m is not on this machine and it is offline (HF_HUB_OFFLINE): "
        "download it elsewhere and pass --opt nullspace.caption_model=/path/to/that/folder, "
        "or use --opt nullspace.captions=prompt (no model) or --opt nullspace.captions=file "
        "(a captions.json)"
    )
    hosts = []
    monkeypatch.setattr(hub, "hub_offline", lambda: False)
    monkeypatch.setattr(hub, "host_reachable", lambda host: hosts.append(host) or False)
    with pytest.raises(BenchError) as info:
        blip_source("org/m")
    assert str(info.value).startswith(
        "BLIP captioner org/m is not on this machine and huggingface.co cannot be reached: "
        "download it elsewhere and pass --opt <detector>.caption_model=/path"
    )
    assert hosts == ["huggingface.co"]
    monkeypatch.setattr(hub, "host_reachable", lambda host: True)
    assert blip_source("org/m") == ("org/m", {"cache_dir": "/hub/cache"})


def test_load_blip_passes_where_and_names_what_failed(tmp_path, monkeypatch):
    import transformers

    folder = tmp_path / "blip"
    folder.mkdir()
    calls = []

    def loader(kind):
        def from_pretrained(source, **kwargs):
            calls.append((kind, source, kwargs))
            return kind

        return from_pretrained

    monkeypatch.setattr(transformers.BlipProcessor, "from_pretrained", loader("processor"))
    monkeypatch.setattr(
        transformers.BlipForConditionalGeneration, "from_pretrained", loader("model")
    )
    assert load_blip(str(folder)) == ("model", "processor")
    monkeypatch.setattr(hub, "hf_cache_dir", lambda: "/hub/cache")
    monkeypatch.setattr(hub, "cached_hub_file", lambda m, names: "/x")
    load_blip("org/m")
    kwargs = {"cache_dir": "/hub/cache", "local_files_only": True}
    assert calls[2:] == [("processor", "org/m", kwargs), ("model", "org/m", kwargs)]

    for error, shown in [
        (OSError("no weights\nsecond line"), "OSError: no weights"),
        (ValueError("  "), "ValueError: "),
        (RuntimeError("x" * 400), "RuntimeError: " + "x" * 300),
    ]:

        def broken(source, error=error, **kwargs):
            raise error

        monkeypatch.setattr(transformers.BlipForConditionalGeneration, "from_pretrained", broken)
        with pytest.raises(BenchError) as info:
            load_blip("org/m")
        assert str(info.value) == f"could not load BLIP captioner org/m: {shown}"


def test_load_blip_names_the_option_by_default(tmp_path, monkeypatch):
    monkeypatch.setattr(hub, "cached_hub_file", lambda m, names: None)
    monkeypatch.setattr(hub, "hub_offline", lambda: True)
    with pytest.raises(BenchError, match=r"--opt <detector>\.caption_model=/path/to/that/folder"):
        load_blip("org/m")
    with pytest.raises(BenchError, match=r"--opt q\.caption_model=/path/to/that/folder"):
        BlipCaptions("org/m", option="q.caption_model", model=None)._load("cpu")
