"""Rendering console pages: one Jinja2 environment over the package's templates, the filters
the pages share, and the small inline SVG chart of the overview.

Guarantees:
- every value is HTML-escaped (autoescape is on for every template); JSON is shown pretty,
  escaped, and cut at `MAX_JSON_CHARS` with a note, so a huge payload never stalls a page;
- every page is sent with a Content-Security-Policy that allows only this origin's scripts
  and styles (no inline script, no inline style, no other origin), and is never cached;
- the chart is plain SVG built here, with a text alternative (`<title>`, `<desc>`) for
  screen readers; no script draws it.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

import jinja2
from fastapi import Request
from starlette.responses import HTMLResponse

from storage.storable import readable

TEMPLATES: Final = Path(__file__).parent / "templates"
MAX_JSON_CHARS: Final = 20_000
CONSOLE_CSP: Final = ("default-src 'self'; script-src 'self'; style-src 'self'; "
                      "img-src 'self' data:; connect-src 'self'; form-action 'self'; "
                      "frame-ancestors 'none'; base-uri 'none'")
LIVE_POLL_S: Final = 15  # the fallback poll of a block that follows the tenant's stream
PAGE_HEADERS: Final = {"Content-Security-Policy": CONSOLE_CSP, "Cache-Control": "no-store"}


def pretty_json(value: Any) -> str:
    """`value` as indented JSON, cut at `MAX_JSON_CHARS`."""
    text = json.dumps(readable(value), indent=2, sort_keys=True, ensure_ascii=False,
                      default=str)
    if len(text) > MAX_JSON_CHARS:
        text = text[:MAX_JSON_CHARS] + f"\n… ({len(text) - MAX_JSON_CHARS} more characters)"
    return text


def when(value: datetime | None) -> str:
    """A time as UTC, to the second."""
    if value is None:
        return "—"
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def seconds(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    return f"{value:.2f} s"


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters.update(pretty_json=pretty_json, when=when, seconds=seconds, percent=percent)
    env.globals.update(live_poll_s=LIVE_POLL_S)
    return env


def render(request: Request, template: str, caller: Any, status_code: int = 200,
           headers: dict[str, str] | None = None, **context: Any) -> HTMLResponse:
    """`template` as the response, with the caller (None before sign-in) and its CSRF token."""
    html = environment().get_template(template).render(
        request=request, caller=caller, csrf=getattr(caller, "csrf", ""),
        path=request.url.path, **context)
    return HTMLResponse(html, status_code=status_code,
                        headers={**PAGE_HEADERS, **(headers or {})})


def bar_chart(counts: list[tuple[str, int, int]], width: int = 360,
              height: int = 120) -> dict[str, Any]:
    """The overview's throughput chart from (label, succeeded, failed) per bucket, oldest
    first: stacked bars in SVG coordinates, for `_chart.html`."""
    peak = max((s + f for _, s, f in counts), default=0)
    top = peak or 1
    slot = width / max(len(counts), 1)
    bars = []
    for index, (label, succeeded, failed) in enumerate(counts):
        ok_h = round(succeeded / top * (height - 20), 1)
        bad_h = round(failed / top * (height - 20), 1)
        x = round(index * slot + 1, 1)
        bars.append({"x": x, "w": round(slot - 2, 1), "label": label,
                     "ok_y": round(height - ok_h, 1), "ok_h": ok_h,
                     "bad_y": round(height - ok_h - bad_h, 1), "bad_h": bad_h,
                     "succeeded": succeeded, "failed": failed})
    total_ok = sum(s for _, s, _ in counts)
    total_bad = sum(f for _, _, f in counts)
    return {"width": width, "height": height, "bars": bars, "peak": peak,
            "summary": f"{total_ok} succeeded and {total_bad} failed in the last hour"}
