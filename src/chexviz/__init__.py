"""chexviz: chest X-ray multi-label diagnosis with Grad-CAM explanations.

The public API is re-exported here; see the API reference for each module.
"""

from chexviz._version import __version__
from chexviz.labels import CHEXPERT_LABELS, COMPETITION_LABELS

__all__ = [
    "CHEXPERT_LABELS",
    "COMPETITION_LABELS",
    "__version__",
]
