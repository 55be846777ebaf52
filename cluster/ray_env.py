"""Environment Ray must see before it is imported, for clusters on one machine.

Ray reports a machine's external address as the node IP unless told to keep a local cluster
on 127.0.0.1, and new local clusters use token auth: a process that joins one must say so with
RAY_AUTH_MODE=token. Ray reads the first when it is imported, so importing the `cluster` package
sets them (keeping any the user set), and every driver entrypoint sets them again first thing.
"""

from __future__ import annotations

import os

LOCAL_CLUSTER_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token"}


def prepare_ray_environment() -> None:
    """Set the local-cluster defaults, keeping any the user set."""
    for key, value in LOCAL_CLUSTER_ENV.items():
        os.environ.setdefault(key, value)


def ray_notices_to_stderr() -> None:
    """Send the notices Ray's driver prints for the raylet ("N worker processes have been
    started …") to stderr instead of stdout. A driver's stdout is its own output (`ymera …
    --json` must stay one JSON document, a user's program its own lines); the notices stay
    visible on stderr. Idempotent."""
    from ray._private import worker

    printer = worker.print_to_stdstream
    if getattr(printer, "ymera_to_stderr", False):
        return

    def to_stderr(data: dict, ignore_prefix: bool) -> None:
        printer({**data, "is_err": True}, ignore_prefix)

    to_stderr.ymera_to_stderr = True  # type: ignore[attr-defined]
    worker.print_to_stdstream = to_stderr
