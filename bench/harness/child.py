"""Entry point of `proc.Child`: `python -m bench.harness.child module:function SPEC OUT`.

Reads the JSON spec from SPEC, calls the function with it, writes its JSON result to OUT.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any


def main(argv: list[str]) -> int:
    target, spec, out = argv
    module, _, name = target.partition(":")
    function: Callable[[Mapping[str, Any]], Mapping[str, Any]]
    function = getattr(importlib.import_module(module), name)
    result = function(json.loads(Path(spec).read_text()))
    Path(out).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
