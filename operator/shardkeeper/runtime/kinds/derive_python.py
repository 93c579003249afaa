"""Python derivations: a plug-in callable, named ``package.module:callable``.

The runtime calls it once per source document, in the shard's open store transaction::

    def derive(txn, source: str, document: dict) -> Iterable[dict] | None: ...

``txn.execute(sql, parameters)`` runs SQL on the shard store (its tables are the plug-in's
state, created with ``CREATE TABLE IF NOT EXISTS`` as needed); whatever the call changes
commits with the checkpoint and the outputs, or not at all. The documents it returns (or
yields) go to the output collection. An exception fails the shard at that document, as a
failing SQL lambda does.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from shardkeeper.runtime.core.documents import Document
from shardkeeper.runtime.core.errors import DocumentRejected, TaskMisconfigured
from shardkeeper.runtime.kinds.derivation import SqlHandle

PluginCallable = Callable[[SqlHandle, str, Document], Iterable[Mapping[str, Any]] | None]


def load_callable(entry_point: str) -> PluginCallable:
    """Import ``package.module:callable``; raises :class:`TaskMisconfigured` if it cannot."""
    module_name, _, attribute = entry_point.partition(":")
    if not module_name or not attribute:
        raise TaskMisconfigured(f"a plug-in is named package.module:callable, not {entry_point!r}")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise TaskMisconfigured(f"cannot import plug-in module {module_name!r}: {exc}") from None
    target = getattr(module, attribute, None)
    if not callable(target):
        raise TaskMisconfigured(f"{module_name!r} has no callable named {attribute!r}")
    plugin: PluginCallable = target
    return plugin


class PythonDeriver:
    """Runs a task's ``derive.python``."""

    def __init__(self, entry_point: str) -> None:
        self.entry_point = entry_point
        self.plugin = load_callable(entry_point)

    def pending_migrations(self, applied: Sequence[str]) -> list[str]:
        return []

    def migrate(self, txn: SqlHandle, migrations: Sequence[str], first: int) -> None:
        return None

    def deriving(self, txn: SqlHandle, source: str) -> Callable[[Document], list[Document]]:
        return functools.partial(self.derive, txn, source)

    def derive(self, txn: SqlHandle, source: str, document: Document) -> list[Document]:
        try:
            produced = self.plugin(txn, source, document)
            returned = [] if produced is None else list(produced)
        except Exception as exc:
            raise DocumentRejected(
                f"plug-in {self.entry_point} raised {type(exc).__name__}: {exc}"
            ) from None
        outputs = []
        for output in returned:
            if not isinstance(output, Mapping):
                raise DocumentRejected(
                    f"plug-in {self.entry_point} returned {type(output).__name__}, not a document"
                )
            outputs.append(dict(output))
        return outputs
