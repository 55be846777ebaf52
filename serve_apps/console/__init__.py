"""The web console: server-rendered pages under `/console`, in the API's own application.

    mount_console(app)      # create_app does this; the pages share the API's services

Pages are Jinja2 templates with HTMX (vendored in `static/`, with its version and licence) for
partial updates; live parts follow the API's event streams over Server-Sent Events (`live`,
`static/console.js`) and refresh small fragments, with a slow poll as a fallback. The
console signs people in with the API's login, keeps a revocable session in the auth store
(`session`), and checks every page and action against the same permission as the API route
that does the same thing (`access`), in the caller's tenant only. It holds no state of its
own: any API replica serves any page.
"""

from __future__ import annotations

from fastapi import FastAPI

from serve_apps.console import (
    admin_pages, dead_letters, live, overview, sign_in, static_files, task_pages,
)
from serve_apps.console.access import CONSOLE_PREFIX
from serve_apps.console.session import ConsoleSettings

ROUTERS = (sign_in.router, static_files.router, overview.router, task_pages.router,
           dead_letters.router, admin_pages.router, live.router)


def mount_console(app: FastAPI, settings: ConsoleSettings | None = None) -> None:
    """Serve the console's pages under `/console` in `app` (built by `create_app`)."""
    app.state.console_settings = settings or ConsoleSettings()
    for router in ROUTERS:
        app.include_router(router, prefix=CONSOLE_PREFIX, include_in_schema=False)
