"""nsnet-bench: a benchmark toolkit for detectors of AI-generated images.

Importing this package is cheap on purpose (no torch, no pandas): the CLI's start-up and
`bench list` rely on it.
"""

__version__ = "0.1.0"
