"""probe: measure how close trained MLPs come to convolutional and attention structure."""

from probe.geometry import Geometry

__version__ = "0.1.0"
__all__ = ["Geometry", "__version__"]
