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
