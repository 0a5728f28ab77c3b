"""Edge-vision quantization workbench.

Importing the package configures the offline environment first, so that a later
``import ultralytics`` anywhere in the process never reaches the network.
"""

from workbench import offline as _offline

_offline.configure()

__version__ = "0.1.0"
