"""Research tools for training swap networks: face-crop datasets, the generic loop and per-method recipes.

The engine (modules directly in ``pipeline/``) never imports this package; only ``pipeline/__main__.py``
names its commands (``prepare-faces`` → :mod:`.prepare_faces`, ``train`` → :mod:`.train`).
"""
