"""Generated docs stay true to the code."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_support_tables_match_the_registries():
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import gen_support_tables
    finally:
        sys.path.pop(0)
    assert gen_support_tables.main(["--check"]) == 0, "run: python tools/gen_support_tables.py"
