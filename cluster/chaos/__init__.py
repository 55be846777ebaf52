"""Fault injection: `ymera chaos` runs mixed load against a private platform while faults land
(process kills, storage restarts, network faults through `proxy.FaultProxy`, the removal of a
worker node), then checks that every acknowledged task and run reached one terminal state, none
was lost and none duplicated.

    proxy        a TCP fault proxy (latency, resets, black holes) between platform and storage
    services     private PostgreSQL and Redis servers that may be killed and restarted
    worker_node  the platform's worker node (run by `node_main`), killed whole and replaced
    load         clients that submit with idempotency keys and retry with the same key
    faults       a seeded schedule of faults, each recorded with its time
    checker      the accounting of every acknowledged operation, as a JSON report
    harness      the whole run: platform up, load and faults, quiescence, check, teardown
    cli          `ymera chaos`
"""
