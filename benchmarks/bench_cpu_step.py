"""``strongticket bench cpu`` from a source tree that need not be installed; see strongticket/bench/cpu.py."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from strongticket.bench.cpu import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
