"""``strongticket bench kernels`` from a source tree that need not be installed (the GPU check runs it so); see
strongticket/bench/kernels.py."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from strongticket.bench.kernels import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
