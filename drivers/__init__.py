"""Hardware drivers: one module per device family. They know devices, not business."""
