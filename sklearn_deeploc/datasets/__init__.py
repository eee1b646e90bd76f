"""Data: the DeepLoc HDF5 layout, the published model and datasets, synthetic yeast cells."""

from ._fetch import fetch_deeploc_datasets, fetch_deeploc_model, get_data_home
from ._hdf5 import DeepLocHDF5Dataset, load_deeploc_hdf5, save_deeploc_hdf5
from ._synthetic import IMAGING_STYLES, LOCALIZATIONS, make_yeast_cells

__all__ = [
    "IMAGING_STYLES",
    "LOCALIZATIONS",
    "DeepLocHDF5Dataset",
    "fetch_deeploc_datasets",
    "fetch_deeploc_model",
    "get_data_home",
    "load_deeploc_hdf5",
    "make_yeast_cells",
    "save_deeploc_hdf5",
]
