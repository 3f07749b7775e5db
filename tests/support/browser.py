"""What the browser tests share: Debian's Chromium (or a skip saying how to get it), its launch
arguments, and a real uvicorn server over an index on a free loopback port."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

#: Launch arguments: no sandbox (CI runs as root), nothing fetched in the background.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


def chromium_or_skip() -> str:
    """The Chromium to drive ($SEARCHINDEX_CHROMIUM, else Debian's); skips the calling module without one."""
    found = os.environ.get("SEARCHINDEX_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser") \
        or "/usr/bin/chromium"
    if not os.path.exists(found):
        pytest.skip(f"no Chromium at {found} (apt-get install -y chromium)", allow_module_level=True)
    return found


@contextmanager
def serving(path: Path, **options: Any) -> Iterator[str]:
    """A real uvicorn server over the index at ``path`` (``options``: those of ``create_app``); its base URL."""
    import uvicorn

    from searchindex.web import create_app

    app = create_app(path, device="cpu", **options)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
