"""How cairnctl prints: plain tables and job summaries (pure), or JSON with --json."""

from __future__ import annotations

import json
import time
from typing import Any


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    """Plain text table (pure): columns are (header, key)."""
    cells = [[h for h, _ in columns]] + [[_cell(row.get(k)) for _, k in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value)) if value > 1e9 else f"{value:.1f}"
    return str(value)


def show(data: Any, as_json: bool, render) -> None:
    print(json.dumps(data, indent=2) if as_json else render(data))


def render_job(job: dict[str, Any]) -> str:
    lines = [f"{job['id']}  {job['title'] or job['kind']}",
             f"  node: {job['node']}   state: {job['state']}   progress: {job['progress']}%",
             f"  now: {job.get('description') or '-'}"]
    if job.get("error"):
        lines.append(f"  error: {job['error']}")
    for line in job.get("log", []):
        lines.append(f"  | {line['message']}")
    return "\n".join(lines)


class ApiError(Exception):
    """What the API refused: its HTTP status and message (the commands' modules raise it too; it
    lives here, not in main, because main may run as __main__)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
