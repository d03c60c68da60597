"""Check what `sam build` made of the shared layer: every module under python/ has the bytecode Python 3.11 loads
without looking at its source (unchecked-hash), so no cold start compiles it (``make validate`` runs this).

    python -m tools.layer_bytecode [.aws-sam/build/SharedLayer]
"""

from __future__ import annotations

import sys
from importlib.util import cache_from_source
from pathlib import Path

UNCHECKED_HASH = 0b01
"""The flags word of a hash-based .pyc whose source is never checked (PEP 552)"""


def missing(layer: Path) -> list[str]:
    """The modules of the layer without such bytecode."""
    found = []
    for source in sorted((layer / "python").rglob("*.py")):
        compiled = Path(cache_from_source(str(source)))
        if not compiled.is_file() or int.from_bytes(compiled.read_bytes()[4:8], "little") != UNCHECKED_HASH:
            found.append(str(source.relative_to(layer)))
    return found


def main() -> None:
    layer = Path(sys.argv[1] if len(sys.argv) > 1 else ".aws-sam/build/SharedLayer")
    if not (layer / "python" / "longrun").is_dir():
        sys.exit(f"{layer} holds no built layer (python/longrun): run sam build first")
    if absent := missing(layer):
        sys.exit(f"{len(absent)} modules of the layer would be compiled at a cold start: {', '.join(absent[:10])}")
    print(f"every module of {layer} is compiled (unchecked-hash bytecode)")


if __name__ == "__main__":
    main()
