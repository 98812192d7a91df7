"""Caption providers: a text for each training image, whose CLIP features span the semantics
NS-Net projects away.

The paper captions every training image with BLIP. Three providers, one option
(``captions``) to choose, each returning {image path: caption}:

  "file":   captions written down already: ``RunContext.captions`` (the core reads a
            ``captions.json`` sidecar at a data root; the demo ships one) and, on top,
            ``caption_file`` (JSON {path: caption} or [{"path", "caption"}], or CSV
            path,caption); relative paths are resolved against that file's folder.
  "blip":   BLIP captioning (``caption_model``, a hub id or a local folder), batched and
            cached on disk by image content (sha256) and model: a second run computes nothing.
            Images are read and preprocessed in DataLoader workers (the run's --workers)
            while the model generates.
  "prompt": a template over what the folder layout says: {class} (the folder above
            0_real/1_fake, e.g. "car" in AIGIBench or ForenSynths), {generator} and
            {label} ("real" / "fake"; putting it in a caption would project the label
            direction away, so the default template leaves it out).

Images without a caption: ``missing_captions = "error"`` (default: a one-line BenchError
that says how to provide them) or "prompt" (fill the gaps from the prompt template).
"""

from __future__ import annotations

import csv
import json
import os
import string
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from bench.errors import BenchError

PROVIDERS = ("file", "blip", "prompt")
MISSING_POLICIES = ("error", "prompt")
DEFAULT_BLIP = "Salesforce/blip-image-captioning-base"
DEFAULT_TEMPLATE = "a photo of a {class}"
TEMPLATE_FIELDS = ("class", "generator", "label")
LABEL_FOLDERS = frozenset({"0_real", "1_fake", "ai", "nature"})
SPLIT_FOLDERS = frozenset({"train", "val", "test"})
#: Bump when the way captions are generated changes (part of the cache key).
BLIP_CACHE_VERSION = 1


class SampleLike(Protocol):
    path: str
    label: int
    generator: str


Captions = dict[str, str]


def _key(path: str) -> str:
    """One spelling per file: sidecars resolve symlinks, layouts keep them."""
    return os.path.realpath(os.path.expanduser(path))


# ----------------------------------------------------------------------------- prompt
def class_name(path: str) -> str:
    """The object class a folder layout implies: the folder above the label folder.

    ``.../car/1_fake/x.png`` -> "car"; GenImage ``<gen>/train/ai/x.png`` -> "<gen>";
    a file outside any label folder -> its own folder's name.
    """
    parts = Path(path).parent.parts
    if not parts:
        return ""
    if parts[-1] not in LABEL_FOLDERS:
        return parts[-1]
    rest = [p for p in parts[:-1] if p not in SPLIT_FOLDERS]
    return rest[-1] if rest else ""


class PromptCaptions:
    """Captions from a template: cheap, no model, and the same for every image of a class."""

    def __init__(self, template: str = DEFAULT_TEMPLATE):
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
        unknown = sorted(fields - set(TEMPLATE_FIELDS))
        if unknown or "" in fields:
            raise BenchError(
                f"prompt_template {template!r} uses {', '.join(unknown) or 'an unnamed field'}; "
                f"it may use {{{'}, {'.join(TEMPLATE_FIELDS)}}}"
            )
        self.template = template

    def caption(self, sample: SampleLike) -> str:
        return self.template.format_map(
            {
                "class": class_name(sample.path).replace("_", " "),
                "generator": sample.generator.replace("_", " "),
                "label": "fake" if sample.label else "real",
            }
        )

    def __call__(self, samples: list[SampleLike], ctx: Any = None) -> Captions:
        return {s.path: self.caption(s) for s in samples}


# ----------------------------------------------------------------------------- file
def read_caption_file(file: str | os.PathLike[str]) -> Captions:
    """JSON or CSV captions; keys are resolved against the file's folder."""
    path = Path(os.path.expanduser(file)).resolve()
    if not path.is_file():
        raise BenchError(f"caption file does not exist: {path}")
    try:
        pairs = _csv_pairs(path) if path.suffix.lower() == ".csv" else _json_pairs(path)
    except (ValueError, UnicodeDecodeError, csv.Error) as exc:
        raise BenchError(f"caption file {path} is not readable: {exc}") from None
    return {_key(str(path.parent / p)): str(c) for p, c in pairs}


def _json_pairs(path: Path) -> list[tuple[str, str]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, dict):
        return [(str(k), str(v)) for k, v in data.items()]
    if isinstance(data, list) and all(
        isinstance(d, dict) and {"path", "caption"} <= set(d) for d in data
    ):
        return [(str(d["path"]), str(d["caption"])) for d in data]
    raise ValueError('expected {"path": "caption", ...} or [{"path": ..., "caption": ...}, ...]')


def _csv_pairs(path: Path) -> list[tuple[str, str]]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = [r for r in csv.reader(fh) if any(c.strip() for c in r)]
    if not rows:
        return []
    head = [c.strip().lower() for c in rows[0]]
    p_col, c_col = 0, 1
    if "path" in head and "caption" in head:
        p_col, c_col = head.index("path"), head.index("caption")
        rows = rows[1:]
    out = []
    for i, row in enumerate(rows, 1):
        if len(row) <= max(p_col, c_col):
            raise ValueError(f"row {i} has {len(row)} column(s); expected path,caption")
        out.append((row[p_col].strip(), row[c_col].strip()))
    return out


class FileCaptions:
    """Captions written down: the run's sidecars (ctx.captions), then ``caption_file``."""

    def __init__(self, caption_file: str = ""):
        self.caption_file = caption_file

    def __call__(self, samples: list[SampleLike], ctx: Any = None) -> Captions:
        known = {_key(k): v for k, v in (getattr(ctx, "captions", None) or {}).items()}
        if self.caption_file:
            known.update(read_caption_file(self.caption_file))
        out = {}
        for s in samples:
            text = known.get(_key(s.path))
            if text is not None:
                out[s.path] = text
        return out


# ----------------------------------------------------------------------------- blip
class BlipCaptions:
    """BLIP image captioning, batched, cached by (image sha256, model, settings).

    ``model_id``: a hub id or a local folder. Tests (and callers that hold one already)
    pass ``model`` and ``processor``; ``model_id`` then only names them in the cache key.
    Greedy decoding (deterministic, the cheapest); fp32 on any device.
    """

    def __init__(
        self,
        model_id: str = DEFAULT_BLIP,
        *,
        batch_size: int = 32,
        max_new_tokens: int = 30,
        model: Any = None,
        processor: Any = None,
        option: str = "<detector>.caption_model",
    ):
        self.model_id = model_id
        self.batch_size = max(1, int(batch_size))
        self.max_new_tokens = int(max_new_tokens)
        self.model = model
        self.processor = processor
        self.option = option
        self.generate_calls = 0

    def settings(self) -> dict[str, Any]:
        return {
            "max_new_tokens": self.max_new_tokens,
            "decoding": "greedy",
            "v": BLIP_CACHE_VERSION,
        }

    def cache_file(self) -> Path:
        from bench.cache import cache_dir

        model_key = (
            os.path.abspath(self.model_id) if os.path.isdir(self.model_id) else self.model_id
        )
        return cache_dir("captions", model_key, self.settings()) / "captions.jsonl"

    def __call__(self, samples: list[SampleLike], ctx: Any = None) -> Captions:
        from bench.cache import file_digests

        file = self.cache_file()
        cached = _read_jsonl(file)
        digests = {
            s.path: d for s, d in zip(samples, file_digests([s.path for s in samples]), strict=True)
        }
        digests = {p: d for p, d in digests.items() if d is not None}  # unreadable: skipped
        todo: dict[str, str] = {}  # one image per new digest (duplicates caption once)
        queued: set[str] = set()
        for path, digest in digests.items():
            if digest not in cached and digest not in queued:
                todo[path] = digest
                queued.add(digest)
        processes = getattr(ctx, "processes", None)
        several = processes is not None and processes.several
        items = list(processes.broadcast(todo).items()) if several else list(todo.items())
        if items:
            device = getattr(ctx, "device", "cpu") or "cpu"
            workers = int(getattr(ctx, "workers", 0) or 0)
            log: Callable[[str], None] = getattr(ctx, "log", None) or (lambda _m: None)
            log(f"captioning {len(items)} images with {self.model_id} (cached in {file.parent})")
            if not several:
                cached.update(self._caption(items, device, file, workers))
            else:  # each process captions every N-th image; process 0 writes the cache
                mine = self._caption(
                    items[processes.rank :: processes.world],
                    device,
                    file if processes.main else None,
                    workers,
                )
                for rank, done in enumerate(processes.all_gather(mine)):
                    cached.update(done)
                    if rank > 0 and processes.main:
                        _append_jsonl(file, done)
        found = {p: cached[d] for p, d in digests.items() if d in cached}
        return processes.broadcast(found) if several else found  # process 0's, on every one

    def _caption(
        self, items: list[tuple[str, str]], device: str, file: Path | None, workers: int = 0
    ) -> Captions:
        """Caption ``items`` (path, digest); images are read and preprocessed by
        ``workers`` DataLoader workers while the model generates. Appended to ``file``
        as they come (None: another process writes them)."""
        import torch
        from torch.utils.data import DataLoader

        model, processor = self._load(device)
        dtype = next(model.parameters()).dtype
        loader = DataLoader(
            _BlipImages(items, processor),
            batch_size=self.batch_size,
            num_workers=workers,
            collate_fn=_stack_readable,
        )
        done: Captions = {}
        with open(file, "a", encoding="utf-8") if file else open(os.devnull, "w") as fh:
            for pixels, digests in loader:
                if not digests:
                    continue
                with torch.inference_mode():
                    out = model.generate(
                        pixel_values=pixels.to(device=device, dtype=dtype),
                        max_new_tokens=self.max_new_tokens,
                    )
                self.generate_calls += 1
                texts = processor.batch_decode(out, skip_special_tokens=True)
                for digest, text in zip(digests, texts, strict=True):
                    done[digest] = " ".join(text.split())
                    fh.write(json.dumps({"sha256": digest, "caption": done[digest]}) + "\n")
                fh.flush()
        return done

    def _load(self, device: str) -> tuple[Any, Any]:
        if self.model is None or self.processor is None:
            self.model, self.processor = load_blip(self.model_id, self.option)
        self.model.to(device).eval()
        return self.model, self.processor


class _BlipImages:
    """(path, digest) items -> (pixel_values (3, H, W), digest), read in a worker; an
    unreadable file gives None (skipped, as the data loader skips it)."""

    def __init__(self, items: list[tuple[str, str]], processor: Any):
        self.items = items
        self.processor = processor

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[Any, str] | None:
        from bench.data.images import UnreadableImage, load_rgb

        path, digest = self.items[index]
        try:
            image = load_rgb(path)
        except UnreadableImage:  # listed by the data loader, which skips it too
            return None
        pixels = self.processor(images=[image], return_tensors="pt")["pixel_values"][0]
        return pixels, digest


def _stack_readable(items: list[tuple[Any, str] | None]) -> tuple[Any, list[str]]:
    import torch

    good = [it for it in items if it is not None]
    if not good:
        return None, []
    return torch.stack([p for p, _ in good]), [d for _, d in good]


def _append_jsonl(file: Path, captions: Captions) -> None:
    with open(file, "a", encoding="utf-8") as fh:
        for digest, text in captions.items():
            fh.write(json.dumps({"sha256": digest, "caption": text}) + "\n")


def _read_jsonl(file: Path) -> Captions:
    """sha256 -> caption; a line cut short by a killed run is ignored."""
    out: Captions = {}
    if not file.is_file():
        return out
    with open(file, encoding="utf-8") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
                out[str(rec["sha256"])] = str(rec["caption"])
            except (ValueError, KeyError, TypeError):
                continue
    return out


def blip_source(model_id: str, option: str = "<detector>.caption_model") -> tuple[str, dict]:
    """Where BLIP loads from, checked without loading it: a one-line BenchError if nowhere.

    A local folder, else the hub cache, else a download when the hub can be reached.
    Cheap, so a run can check it before loading CLIP.
    """
    from bench.backbones.hub import cached_hub_file, hf_cache_dir, host_reachable, hub_offline

    if os.path.isdir(os.path.expanduser(model_id)):
        return os.path.expanduser(model_id), {}
    kwargs: dict[str, Any] = {"cache_dir": hf_cache_dir()}
    if cached_hub_file(model_id, ["config.json"]):
        return model_id, {**kwargs, "local_files_only": True}
    why = None
    if hub_offline():
        why = "it is offline (HF_HUB_OFFLINE)"
    elif not host_reachable("huggingface.co"):
        why = "huggingface.co cannot be reached"
    if why:
        raise BenchError(
            f"BLIP captioner {model_id} is not on this machine and {why}: download it "
            f"elsewhere and pass --opt {option}=/path/to/that/folder, or use "
            f"--opt {option.split('.')[0]}.captions=prompt (no model) or "
            f"--opt {option.split('.')[0]}.captions=file (a captions.json)"
        )
    return model_id, kwargs


def load_blip(model_id: str, option: str = "<detector>.caption_model") -> tuple[Any, Any]:
    """BLIP model and processor from a local folder or the hub cache; one line if missing."""
    from transformers import BlipForConditionalGeneration, BlipProcessor

    source, kwargs = blip_source(model_id, option)
    try:
        processor = BlipProcessor.from_pretrained(source, **kwargs)
        model = BlipForConditionalGeneration.from_pretrained(source, **kwargs)
    except Exception as exc:  # hub, missing files, bad configs: one line for the user
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise BenchError(
            f"could not load BLIP captioner {model_id}: {type(exc).__name__}: {first[:300]}"
        ) from None
    return model, processor


# ----------------------------------------------------------------------------- choice
def make_provider(options: dict[str, Any], component: str) -> Callable[..., Captions]:
    """The provider ``options["captions"]`` names, configured from the same options."""
    kind = str(options.get("captions", "file"))
    if kind == "file":
        return FileCaptions(str(options.get("caption_file", "") or ""))
    if kind == "prompt":
        return PromptCaptions(str(options.get("prompt_template", DEFAULT_TEMPLATE)))
    if kind == "blip":
        return BlipCaptions(
            str(options.get("caption_model", DEFAULT_BLIP)),
            batch_size=int(options.get("caption_batch_size", 32)),
            max_new_tokens=int(options.get("caption_max_tokens", 30)),
            option=f"{component}.caption_model",
        )
    raise BenchError(
        f"option {component}.captions must be one of {', '.join(PROVIDERS)}, got {kind!r}"
    )


def captions_for(
    samples: Iterable[SampleLike],
    options: dict[str, Any],
    ctx: Any,
    component: str,
    what: str = "training",
) -> Captions:
    """Every sample's caption, or a one-line BenchError / the documented fallback.

    ``what`` names the images in the message ("training", "test").
    """
    samples = list(samples)
    captions = make_provider(options, component)(samples, ctx)
    missing = [s for s in samples if s.path not in captions]
    if not missing:
        return captions
    policy = str(options.get("missing_captions", "error"))
    if policy == "prompt":
        prompt = PromptCaptions(str(options.get("prompt_template", DEFAULT_TEMPLATE)))
        captions.update(prompt(missing))
        return captions
    if policy != "error":
        raise BenchError(
            f"option {component}.missing_captions must be one of {', '.join(MISSING_POLICIES)}, "
            f"got {policy!r}"
        )
    kind = options.get("captions", "file")
    raise BenchError(
        f"{len(missing)} of {len(samples)} {what} images have no caption from "
        f"{component}.captions={kind!r} (e.g. {missing[0].path}); give "
        f"--opt {component}.caption_file=FILE, --opt {component}.captions=prompt "
        f"(or blip), or --opt {component}.missing_captions=prompt"
    )


# ----------------------------------------------------------------------------- features
class CaptionBank:
    """Training captions by image path and their text features, each text encoded once.

    ``encode`` is a frozen text tower (``Detector.encode_text``): features are cached per
    caption string, so 144k images with repeated captions cost one pass per distinct text.
    """

    def __init__(self, encode: Callable[[list[str]], Any]):
        self.encode = encode
        self.captions: Captions = {}
        self._features: dict[str, Any] = {}

    def __len__(self) -> int:
        return len(self.captions)

    def set(self, captions: Captions) -> None:
        self.captions = dict(captions)

    def features(self, texts: list[str]) -> Any:
        """(len(texts), d) float32 text features on the CPU, encoding only new texts.

        On the CPU because the per-batch SVD runs there (no device sync in a training
        step); checked finite here, once per text, so the per-step path need not check.
        """
        import torch

        new = sorted({t for t in texts if t not in self._features})
        if new:
            encoded = self.encode(new).detach().float().cpu()
            if not bool(torch.isfinite(encoded).all()):
                raise BenchError("the text tower returned NaN or inf for a caption")
            self._features.update(zip(new, encoded, strict=True))
        return torch.stack([self._features[t] for t in texts])

    def add(self, captions: Captions) -> None:
        """More captions (test images' for the ``caption`` / ``own`` evaluation readings)."""
        self.captions.update(captions)

    def for_paths(self, paths: list[str]) -> Any:
        """The caption features of a batch's images (rows of the paper's V)."""
        missing = [p for p in paths if p not in self.captions]
        if missing:
            raise BenchError(
                f"no caption for image {missing[0]} ({len(missing)} in this batch): captions "
                "are computed in fit()/prepare() for the training samples and, for the "
                "caption/own evaluation readings, in plan_evaluation() for the test samples"
            )
        return self.features([self.captions[p] for p in paths])

    def distinct(self) -> Any:
        """Features of every distinct training caption (duplicates add no direction)."""
        return self.features(sorted(set(self.captions.values())))
