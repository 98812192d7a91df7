"""NS-Net (NULL-space projection, Patch Selection, contrastive loss) as a bench plugin.

Import-light on purpose: listing or validating components must not import torch; the
modules are imported only when a component is loaded.
"""
