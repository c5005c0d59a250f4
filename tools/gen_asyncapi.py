"""Write docs/asyncapi.yaml from the message classes (fedhft.asyncapi.asyncapi_yaml).

    python tools/gen_asyncapi.py            # rewrite the file after changing a message
    python tools/gen_asyncapi.py --check    # exit 1, with the fix, when the file is out of date

CI runs the same comparison (tests/unit/protocol/test_spec_asyncapi.py); it never rewrites the file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing it

from fedhft.asyncapi import asyncapi_yaml  # noqa: E402

TARGET = ROOT / "docs" / "asyncapi.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when the file differs")
    args = parser.parse_args(argv)
    text = asyncapi_yaml()
    current = TARGET.read_text(encoding="utf-8") if TARGET.is_file() else None
    if args.check:
        if current != text:
            print(f"{TARGET.relative_to(ROOT)} is out of date: run `python tools/gen_asyncapi.py` and commit it")
            return 1
        print(f"{TARGET.relative_to(ROOT)} is up to date")
        return 0
    TARGET.write_text(text, encoding="utf-8")
    print(f"wrote {TARGET.relative_to(ROOT)} ({len(text.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
