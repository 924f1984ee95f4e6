"""Offline training of the shelf recognizer (needs the `train` extra: torch==2.13.0, onnx).

Two steps that meet only through files (`vision_models` never imports the simulator):

    python -m hw_sim.camera.dataset --out /tmp/shelf-data --seed 1000
    python -m vision_models.train --data /tmp/shelf-data --out vision_models/models/shelf-v1

Nothing at runtime imports this package.
"""
