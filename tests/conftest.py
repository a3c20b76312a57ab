import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
sys.path.insert(0, str(Path(__file__).parent))

# torchvision (imported by timm) loads triton, whose LLVM clashes with TensorFlow's and
# segfaults when TensorFlow was imported first; the other order is fine.
try:
    import timm  # noqa: F401
except ImportError:
    pass


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running; deselected by default, run with -m slow")
    config.addinivalue_line("markers", "torch: needs torch/timm (the [torch] extra)")
