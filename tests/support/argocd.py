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
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    # as Argo CD does: the object as a Lua table, built from its JSON
    to_table = lua.eval(
        "function(py) local function conv(v) "
        "if python.builtins.isinstance(v, python.builtins.dict) then "
        "local t = {} for k in python.iter(v) do t[k] = conv(v[k]) end return t "
        "elseif python.builtins.isinstance(v, python.builtins.list) then "
        "local t = {} for i = 0, python.builtins.len(v) - 1 do t[i + 1] = conv(v[i]) end "
        "return t else return v end end return conv(py) end"
    )
    lua.globals().obj = to_table(json.loads(json.dumps(obj)))
    result = lua.execute(SCRIPT.read_text())
    return str(result["status"]), str(result["message"] or "")
