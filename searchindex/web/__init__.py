"""The web page and JSON API of ``searchindex serve`` (extra ``searchindex[web]``).

:func:`create_app` returns the ASGI application for an index; :func:`serve_app`
runs it with uvicorn.  FastAPI and uvicorn are imported only when one of them is
called, so the CLI's ``--help`` and the library stay light.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

from ..errors import MissingExtraError

if TYPE_CHECKING:
    from collections.abc import Callable
    from os import PathLike

__all__ = ["create_app", "is_loopback", "serve_app"]


def is_loopback(host: str) -> bool:
    """True for a name or address that only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _need_web() -> None:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError(f"the web server needs {exc.name}", extra="web") from None


def create_app(index_path: str | PathLike[str], **options: Any) -> Any:
    """The ASGI application serving the page and the JSON API for the index at ``index_path``.

    Options are those of :class:`searchindex.web.app.WebApp` (``host``, ``token``,
    ``device``, ``cors_origins``, ``thumbnail_cache_mb``, ...).

    Raises:
        MissingExtraError: FastAPI is not installed.
        IndexNotFoundError: no index at ``index_path``.
    """
    _need_web()
    from .app import build_app

    return build_app(index_path, **options)


def serve_app(index_path: str | PathLike[str], *, host: str = "127.0.0.1", port: int = 8765,
              token: str | None = None, on_ready: Callable[[str], None] | None = None, **options: Any) -> None:
    """Serve :func:`create_app` with uvicorn until Ctrl-C (or SIGTERM); ``on_ready(url)`` once listening."""
    _need_web()
    import uvicorn

    app = create_app(index_path, host=host, token=token, **options)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    if on_ready is not None:
        original = server.startup

        async def startup(sockets: Any = None) -> None:
            await original(sockets)
            bound = port
            for srv in getattr(server, "servers", []):
                for sock in srv.sockets:
                    bound = sock.getsockname()[1]
                    break
            shown = f"[{host}]" if ":" in host else host
            url = f"http://{shown}:{bound}/"
            on_ready(url + (f"?token={token}" if token else ""))

        server.startup = startup  # type: ignore[method-assign]
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled once it has shut down cleanly
        pass
