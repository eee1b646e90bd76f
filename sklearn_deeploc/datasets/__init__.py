"""Data: the DeepLoc HDF5 layout and a synthetic yeast-cell generator."""

from ._hdf5 import DeepLocHDF5Dataset, load_deeploc_hdf5
from ._synthetic import IMAGING_STYLES, LOCALIZATIONS, make_yeast_cells

__all__ = [
    "IMAGING_STYLES",
    "LOCALIZATIONS",
    "DeepLocHDF5Dataset",
    "load_deeploc_hdf5",
    "make_yeast_cells",
]
