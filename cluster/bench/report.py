"""How every `ymera bench` suite hands over its report: the JSON report printed with `--json`
(else a short summary), and also written to `--output` when given."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def publish_report(report: dict[str, Any], args: Any,
                   summary: Callable[[dict[str, Any]], str]) -> dict[str, Any]:
    text = json.dumps(report, indent=2)
    if args.output:
        Path(args.output).write_text(text)
    print(text if args.json else summary(report))
    return report
