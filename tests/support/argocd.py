"""Runs the Argo CD health script that docs/argocd/health.lua ships, in Lua 5.1 (Argo CD's
interpreter speaks 5.1), on an object as the API server returns it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lupa import lua51

SCRIPT = Path(__file__).resolve().parents[2] / "docs" / "argocd" / "health.lua"


def health(obj: dict[str, Any]) -> tuple[str, str]:
    """(status, message) that Argo CD would show for ``obj``."""
    lua = lua51.LuaRuntime(unpack_returned_tuples=True, register_eval=False)
    # as Argo CD does: the object as Lua tables (lists become 1-based arrays)
    lua.globals().obj = lua.table_from(json.loads(json.dumps(obj)), recursive=True)
    result = lua.execute(SCRIPT.read_text())
    return str(result["status"]), str(result["message"] or "")
