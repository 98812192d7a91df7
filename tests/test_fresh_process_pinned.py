"""Issue 17 (mutation testing): what only a fresh process under a non-UTF-8 locale shows.

Two survivors of the nsnet_plugin/ run changed behaviour that one pytest process cannot
see: a JSON caption file read in the locale's encoding instead of UTF-8 (Python picks
the encoding at start-up), and a PIL image turned into a tensor over Pillow's read-only
buffer (torch warns once per process). One child process, started in the C locale with
UTF-8 mode and locale coercion off (so its default encoding is ASCII), checks both.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, locale, sys, warnings
from pathlib import Path

import numpy as np
from PIL import Image

from nsnet_plugin.captions import read_caption_file
from nsnet_plugin.patch_explain import _pil_to_tensor

folder = Path(sys.argv[1])
out = {"encoding": locale.getpreferredencoding(False)}
(folder / "caps.json").write_bytes('{"a.png": "une for\u00eat \u00e0 l\'aube"}'.encode("utf-8"))
out["captions"] = read_caption_file(folder / "caps.json")
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    grey = Image.fromarray(np.arange(12, dtype=np.uint8).reshape(3, 4), "L")
    tensor, mode = _pil_to_tensor(grey)
    tensor += 1  # the tensor must own its memory: Pillow's buffer is read-only
out["warnings"] = [str(w.message) for w in caught]
out["pixels"] = tensor.tolist()
out["image_after"] = np.asarray(grey).tolist()
print(json.dumps(out))
"""


def test_utf8_captions_and_owned_pixels_under_an_ascii_locale(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "LC_ALL": "C",
        "LANG": "C",
        "PYTHONUTF8": "0",
        "PYTHONCOERCECLOCALE": "0",
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]
        ),
    }
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["encoding"].lower() in {"ansi_x3.4-1968", "ascii", "us-ascii"}  # locale took
    assert out["captions"] == {str((tmp_path / "a.png").resolve()): "une forêt à l'aube"}
    assert out["warnings"] == []
    assert out["pixels"] == [[[v + 1 for v in range(r * 4, r * 4 + 4)] for r in range(3)]]
    assert out["image_after"] == [list(range(r * 4, r * 4 + 4)) for r in range(3)]
