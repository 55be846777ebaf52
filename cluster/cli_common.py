"""What every `ymera` command group shares: the settings a command runs with, the client it
reaches the platform through, and how it prints (`--json` or text)."""

from __future__ import annotations

import argparse
import json
from typing import Any


def settings_of(args: argparse.Namespace) -> Any:
    """The settings, with the Ray address of `--address` when the command was given one."""
    from cluster.settings import Settings

    settings = Settings()
    address = getattr(args, "address", None)
    if address:
        settings = settings.model_copy(update={"ray_address": address})
    return settings


def client_of(args: argparse.Namespace) -> Any:
    """A client of the platform the command's settings name."""
    from cluster.platform import client

    return client(settings_of(args))


def print_result(args: argparse.Namespace, value: Any, text: str) -> None:
    """`value` as JSON with `--json`, else `text`."""
    if args.json:
        print(json.dumps(value, indent=2, default=str))
    else:
        print(text)
