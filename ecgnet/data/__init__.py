"""Datasets: the adapter contract, shared transforms, splits and samplers, and one
module per dataset; importing this package registers every adapter."""
from . import samplers, synthetic, transforms  # noqa: F401  (registration)
from . import ptbxl  # noqa: F401
from . import cinc17  # noqa: F401
from . import cinc2020  # noqa: F401
from . import kaggle_csv, mitdb  # noqa: F401
from . import hdf5  # noqa: F401
from .base import ECGAdapter, RecordSet
from .splits import assert_disjoint, make_splits

__all__ = ["ECGAdapter", "RecordSet", "assert_disjoint", "make_splits"]
