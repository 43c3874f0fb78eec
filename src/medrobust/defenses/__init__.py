"""Defenses, looked up by name in the ``defense`` family of the registry.

- ``pgd-at``, ``trades``: adversarial fine-tuning objectives (:mod:`.adversarial_training`);
- ``input-noise``, ``attention-noise``, ``fusion-noise``: randomised noise injection (:mod:`.noise`);
- ``purifier``: a denoising purifier before the classifier (:mod:`.purifier`).

The contract every defense follows is in :mod:`.base`.
"""
