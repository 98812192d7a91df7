"""Baseline detectors (UnivFD, SAFE, VIB-Net), packaged the way an outside plugin would be.

Nothing here is imported by the core: the entry point ``baselines = "baselines.plugin"``
registers the catalogue entries, and each detector module is imported only when a run
names it. This package therefore imports no torch at import time.
"""
