"""The driver side of the platform: settings, the local Ray head, `ymera`, the Python client,
batch jobs and benchmarks.

Importing any of it first sets the environment a local Ray cluster needs (`cluster.ray_env`),
before a module here imports Ray, which reads part of it once, at import. So
`from cluster.client import Client` joins a local head from a plain `python` process.
"""

from cluster.ray_env import prepare_ray_environment

prepare_ray_environment()
