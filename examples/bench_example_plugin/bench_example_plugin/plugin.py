"""The hook bench calls: register components by name with lazy "module:attr" targets.

Keep this module light (no torch import): `bench list` imports it.
"""

from bench.plugins import hookimpl


@hookimpl
def register_components(register):
    register(
        "detector",
        "mean_brightness",
        "bench_example_plugin.detector:MeanBrightness",
        defaults={"epochs": 3, "batch_size": 16, "lr": 0.1},
        summary="Example: logistic regression on the mean brightness of the image",
    )
