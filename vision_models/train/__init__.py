"""Offline training of the shelf recognizer (needs the `train` extra: torch==2.13.0, onnx).

Run `python -m vision_models.train --out vision_models/models/shelf-v1 --seed 1000`.
Nothing at runtime imports this package.
"""
