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
        # Each option declared once: default, allowed values and why (`bench options NAME`).
        options={
            "epochs": {"default": 3, "min": 1, "doc": "enough for one feature"},
            "batch_size": {"default": 16, "min": 1, "doc": "small: the model is tiny"},
            "lr": {"default": 0.1, "gt": 0, "doc": "plain SGD on one weight and a bias"},
        },
        summary="Example: logistic regression on the mean brightness of the image",
    )
