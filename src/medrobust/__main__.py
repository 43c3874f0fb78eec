"""``python -m medrobust`` (also what ``torchrun -m medrobust study ...`` runs)."""

import sys

from medrobust.cli import main

sys.exit(main())
