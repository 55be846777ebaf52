"""Batches: a file of tasks (and workflow runs) run as one Ray job (`python -m cluster.batch`,
`ymera batch`).

`input` reads and checks the JSON Lines, `workflows` turns lines that name a workflow into runs,
`runner` submits and follows them with at most so many in flight, `entrypoint` is the job's
command line, and `job` submits that job and reports on it.
"""
