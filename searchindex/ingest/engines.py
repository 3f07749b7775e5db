"""Where an indexing run's produce step runs: the ``engine`` argument of :meth:`searchindex.Index.add_folder`.

``local`` is this machine's worker pool (the default producer of
:func:`searchindex.ingest.indexer.index_entries`); ``ray`` a local Ray instance,
started and stopped by the run; or an engine object such as
:class:`searchindex.ingest.ray_engine.RayEngine` (a cluster, GPUs, actor count).
Scanning, change detection, the lock and the commits stay with the driver.
"""

from __future__ import annotations

from typing import Any

from ..models.session import ModelSession
from .produce import Producer

__all__ = ["ENGINES", "engine_options"]

#: The engines named by a string.
ENGINES = ("local", "ray")


def engine_options(engine: str | Producer, options: dict[str, Any], models: ModelSession) -> dict[str, Any]:
    """The indexing run's ``options`` with ``engine`` as its producer (none for ``local``).

    An engine object gets the run's read limits (``max_megapixels``, ``max_file_bytes``)
    when it has them, and is bound to the index's model (``bind``) when it can be, so its
    workers load the same weights.

    Raises:
        ValueError: an unknown engine name.
        MissingExtraError: ``ray`` without Ray installed (``searchindex[ray]``).
    """
    if engine == "ray":
        from .ray_engine import RayEngine

        engine = RayEngine()  # closed by the run when it ends (Producer.close)
    elif isinstance(engine, str) and engine != "local":
        raise ValueError(f"unknown engine {engine!r}; use 'local', 'ray' or an engine object")
    if isinstance(engine, str):
        return options
    for limit in ("max_megapixels", "max_file_bytes"):  # the run's read limits apply there too
        if limit in options and hasattr(engine, limit):
            setattr(engine, limit, options[limit])
    bind = getattr(engine, "bind", None)
    if bind is not None:  # with the model, if this process has it loaded (its input is then known)
        bind(models.spec, models.dim, models.device, models.precision,
             encoder=models.encoder if models.loaded == "torch" else None)
    return {**options, "producer": engine}
