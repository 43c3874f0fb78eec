"""medrobust: robustness of self-supervised vs supervised medical image (and image-report) models.

Kept import-light on purpose (``medrobust --help`` must answer in about a second): heavy modules
(torch, sklearn, matplotlib) are imported by the submodules that need them.
"""

__version__ = "0.1.0"
