"""`python -m vision_models.train --data DIR --out MODEL_DIR`: see vision_models/train/train.py."""

import sys

from vision_models.train.train import main

sys.exit(main())
