"""Run one Ray worker node in this process's session until killed:

    python -m cluster.chaos.node_main '{"gcs_address": "127.0.0.1:6380", "num_cpus": 2, ...}'

The argument is the node's `RayParams` as JSON. This is what `ray start --address=... --block`
does, minus two of its rules for a one-machine cluster: `ray start` refuses to add a node while
`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` (which keeps local clusters on 127.0.0.1, see
`cluster.ray_env`), and with that variable at 1 it rewrites a 127.0.0.1 head address to the
machine's external address, where the loopback-only head does not answer. Ray's own
`ray.cluster_utils.Cluster` starts its extra nodes the same way. Prints `STARTED` once the
node's raylet has registered with the head.
"""

from __future__ import annotations

import json
import signal
import sys

from cluster.ray_env import prepare_ray_environment

STARTED = "Ray runtime started"


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit("usage: python -m cluster.chaos.node_main RAY_PARAMS_JSON")
    prepare_ray_environment()
    from ray._private.node import Node
    from ray._private.parameter import RayParams

    Node(RayParams(**json.loads(argv[0])), head=False, shutdown_at_exit=False,
         spawn_reaper=False)
    print(STARTED, flush=True)
    while True:
        signal.pause()


if __name__ == "__main__":
    main(sys.argv[1:])
