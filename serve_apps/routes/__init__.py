"""The HTTP API's route groups, each an `APIRouter` mounted under `/api/v1` by `serve_apps.app`.

`access` holds what every route shares: who the caller is, what each route requires of them
(`ROUTE_PERMISSIONS`), and the rate limits spent before any work.
"""
