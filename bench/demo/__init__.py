"""Embedded demo benchmark: offline photographs vs fakes from small trained autoencoders.

It lets `bench run` work with no data, no network, no GPU and no weights. It checks the
whole pipeline and shows relative effects at small scale; it does not replace GenImage,
UniversalFakeDetect or AIGIBench. Import-light: torch loads only when a build runs.
"""

from bench.demo.build import (
    ALL_FAMILIES,
    BUILD_VERSION,
    TRAIN_FAMILIES,
    DemoSizes,
    build_demo,
    demo_root,
)

__all__ = [
    "ALL_FAMILIES",
    "BUILD_VERSION",
    "TRAIN_FAMILIES",
    "DemoSizes",
    "build_demo",
    "demo_root",
]
