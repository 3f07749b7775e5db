"""Old flat module paths (``searchindex.fewshot``, ``searchindex.vectors``...) as aliases of their new homes.

The package was flat until 0.2; the restructure moved every module into a
subpackage (see CHANGELOG.md).  Code written against the old paths keeps
working: :class:`AliasFinder`, installed on ``sys.meta_path`` by
``searchindex/__init__.py``, answers an import of an old path with the module
now at the new one (the same module object, so ``isinstance`` and monkeypatching
agree) and emits a :class:`DeprecationWarning` naming the new path.  Nothing is
imported until an old path is asked for.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType

#: old module path -> new module path
ALIASES: dict[str, str] = {
    "searchindex.catalog": "searchindex.store.catalog.database",
    "searchindex.migrations": "searchindex.store.catalog.migrations",
    "searchindex.lock": "searchindex.store.lock",
    "searchindex.querycache": "searchindex.store.querycache",
    "searchindex.vectors": "searchindex.store.vectors.index",
    "searchindex.encoders": "searchindex.models.encoders",
    "searchindex.onnxmodels": "searchindex.models.onnx",
    "searchindex.quantize": "searchindex.models.quantize",
    "searchindex.tokenizer": "searchindex.models.tokenizer",
    "searchindex.pixels": "searchindex.models.pixels",
    "searchindex.images": "searchindex.models.images",
    "searchindex.captioning": "searchindex.models.captioners",
    "searchindex.scan": "searchindex.ingest.scan",
    "searchindex.metadata": "searchindex.ingest.metadata",
    "searchindex.keywords": "searchindex.ingest.keywords",
    "searchindex.indexer": "searchindex.ingest.indexer",
    "searchindex.query": "searchindex.search.query",
    "searchindex.hybrid": "searchindex.search.hybrid",
    "searchindex.fewshot": "searchindex.search.fewshot",
    "searchindex.tagging": "searchindex.enrich.tagging",
    "searchindex.duplicates": "searchindex.enrich.duplicates",
    "searchindex.synthetic": "searchindex.demo.synthetic",
}


class AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves the old module paths in :data:`ALIASES` to the modules at their new paths."""

    def __init__(self) -> None:
        self._specs: dict[str, importlib.machinery.ModuleSpec | None] = {}

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in ALIASES:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        new = ALIASES[spec.name]
        warnings.warn(f"{spec.name} moved to {new}; import it from there", DeprecationWarning, stacklevel=2)
        module = importlib.import_module(new)
        self._specs[new] = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # The import system has just stamped the alias's spec on the real module; give it its own
        # back, so that reload() and anything reading __spec__ keep seeing the new path.
        module.__spec__ = self._specs.pop(module.__name__, module.__spec__)


def install() -> None:
    """Put one :class:`AliasFinder` on ``sys.meta_path`` (idempotent)."""
    if not any(isinstance(f, AliasFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, AliasFinder())
