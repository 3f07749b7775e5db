"""The serve command: the web page and JSON API (see :mod:`searchindex.web`)."""

from __future__ import annotations

from pathlib import Path

import click

from ..defaults import DEFAULT_HOST, DEFAULT_PORT
from .common import DEVICE, errors_as_click, index_option, resolve_index_path


@click.command()
@index_option
@click.option("--host", default=DEFAULT_HOST, show_default=True,
              help="Address to listen on. Anything but a loopback address needs a token (see --token).")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on (0: any free port).")
@click.option("--token", default=None, envvar="SEARCHINDEX_TOKEN",
              help="Secret every request must carry (?token=, a cookie, or Authorization: Bearer). Generated "
                   "when --host is not a loopback address and none is given.")
@click.option("--open", "open_browser", is_flag=True, help="Open the page in the default web browser.")
@click.option("--device", type=DEVICE, default="auto", show_default=True, help="Where the model runs.")
@click.option("--watch", is_flag=True,
              help="Keep the index live while serving (as `searchindex watch` on the indexed folders); the page "
                   "offers new photos as they arrive.")
def serve(index_path: Path | None, host: str, port: int, token: str | None, open_browser: bool,
          device: str, watch: bool) -> None:
    """Serve a search page and a JSON API for the index.

    The page: a thumbnail grid, a detail view, "more like this", like/unlike
    to teach the search, saved concepts, filters, tags, duplicates, errors.
    The API is described at /openapi.json. Ctrl-C stops the server.
    """
    from ..web import is_loopback, serve_app

    path = resolve_index_path(index_path)
    if not is_loopback(host):
        if token is None:
            import secrets

            token = secrets.token_urlsafe(24)
        click.echo(f"Warning: listening on {host}, reachable from other machines: every request needs the "
                   "token.", err=True)

    def ready(url: str) -> None:
        click.echo(f"Serving {path} at {url}  (Ctrl-C stops)", err=True)
        if open_browser:
            import webbrowser

            webbrowser.open(url)

    with errors_as_click():
        serve_app(path, host=host, port=port, token=token, device=device, on_ready=ready, watch=watch)
