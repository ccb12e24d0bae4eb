"""geoseg: semantic segmentation of satellite scenes.

Tile scenes into georeferenced chips, train segmentation models, predict seam-free
into styled Cloud-Optimized GeoTIFFs, vectorize land cover and map change.
"""

from geoseg.errors import GeosegError
from geoseg.grid import Grid

__version__ = "0.1.0"

__all__ = ["GeosegError", "Grid", "__version__"]
