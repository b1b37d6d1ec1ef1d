"""reconguard: stress-test and harden deep-learning MRI reconstruction.

Sub-packages (data flows one way, top to bottom):

- :mod:`reconguard.physics` -- centred FFTs, sampling masks, coil maps, forward operators.
- :mod:`reconguard.data` -- fastMRI HDF5 I/O, the built-in data set, :class:`~reconguard.data.Sample`.
- :mod:`reconguard.models` -- reconstructors (zero-filled, U-Net, VarNet, MoDL, compressed sensing).
- :mod:`reconguard.metrics` -- PSNR / SSIM / NMSE with fastMRI semantics.
- :mod:`reconguard.training` -- supervised training loop with resumable checkpoints.

Importing the top-level package is cheap: sub-packages are imported on first use.
"""

from reconguard.errors import ReconguardError

__version__ = "0.1.0"
__all__ = ["ReconguardError", "__version__"]
