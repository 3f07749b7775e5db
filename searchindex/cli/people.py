"""People: faces (find and group faces), people (list, name, merge, move, not, hide)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from ..faceresults import Person
from .common import (
    display,
    echo_failures,
    index_option,
    open_index,
    progress_bar,
    resolve_index_path,
    stop_on_sigint,
    verbosity_options,
)


@click.command()
@index_option
@click.option("--detector", type=click.Choice(["hog", "cnn"]), default="hog", show_default=True,
              help="hog: fast, frontal faces; cnn: also turned and smaller faces, 20-60x slower on a CPU.")
@click.option("--detect-side", type=click.IntRange(min=160), default=None, metavar="PIXELS",
              help="Long side of the copy the detector searches (default 1600): more finds smaller faces, slower.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def faces(index_path: Path | None, detector: str, detect_side: int | None, as_json: bool) -> None:
    """Find the faces in indexed images not searched yet, and group them into persons.

    Runs offline with dlib's models from the faces extra (pip install
    'searchindex[faces]'). Each batch is committed as it is done: Ctrl-C keeps
    them, and the same command resumes; images indexed later are searched by the
    next run, and faces not yet in a person are grouped again. See `searchindex people`.
    """
    with open_index(index_path) as idx, progress_bar("faces") as bar, stop_on_sigint() as stop:
        summary = idx.find_faces(detector, detect_side=detect_side, progress=bar, stop=stop)  # type: ignore[arg-type]
    if as_json:
        click.echo(json.dumps({**summary.to_dict(), "index": str(resolve_index_path(index_path))}))
    else:
        g = summary.grouping
        click.echo(f"{summary.faces} faces in {summary.images} images ({summary.failed} unreadable, "
                   f"{summary.already} searched before) with {summary.detector} in {summary.seconds:.1f} s.")
        if g is not None:
            click.echo(f"Grouping: {g.joined} faces joined known persons, {g.new_persons} new persons "
                       f"({g.grouped} faces), {g.unassigned} faces not in a person yet.")
        echo_failures(summary.failures)
    if summary.interrupted:
        click.echo("Interrupted: the faces found so far are committed. Run the same command again to resume.",
                   err=True)
        sys.exit(130)


def _person_json(p: Person) -> dict[str, Any]:
    return {"id": p.id, "name": p.name, "count": p.count, "images": p.images, "hidden": p.hidden,
            "confirmed": p.confirmed,
            "faces": [{"id": f.id, "image_id": f.image_id, "path": f.path, "box": list(f.box)} for f in p.faces]}


def _person_line(p: Person) -> str:
    name = p.name if p.name is not None else "(unnamed)"
    face = f"  e.g. {display(p.faces[0].path)}" if p.faces else ""
    flags = " [hidden]" if p.hidden else ""
    return f"{p.id:>5}  {name:<24} {p.count:>5} faces in {p.images:>5} photos{flags}{face}"


@click.group(invoke_without_command=True)
@index_option
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per person: id, name (or null), faces (each with its image path and box).")
@click.option("--all", "show_hidden", is_flag=True, help="Include hidden persons.")
@click.pass_context
def people(ctx: click.Context, index_path: Path | None, as_json: bool, show_hidden: bool) -> None:
    """List the persons found by `searchindex faces`: named first, then by number of faces.

    The subcommands fix what grouping got wrong; every fix is kept across later
    runs. A box is left, top, width, height in pixels of the photo as shown
    (EXIF orientation applied).
    """
    ctx.ensure_object(dict)
    ctx.obj["index_path"] = index_path
    if ctx.invoked_subcommand is not None:
        return
    with open_index(index_path) as idx:
        persons = idx.persons(hidden=show_hidden)
    for p in persons:
        click.echo(json.dumps(_person_json(p)) if as_json else _person_line(p))
    if not persons and not as_json:
        click.echo("No persons yet (run `searchindex faces` after `searchindex index`).", err=True)


def _index_of(ctx: click.Context, index_path: Path | None) -> Path | None:
    return index_path if index_path is not None else ctx.obj.get("index_path")


@people.command("name")
@index_option
@click.argument("person_id", type=int)
@click.argument("name")
@click.pass_context
def name_cmd(ctx: click.Context, index_path: Path | None, person_id: int, name: str) -> None:
    """Name person PERSON_ID (this confirms it: it is never merged with another by grouping)."""
    with open_index(_index_of(ctx, index_path)) as idx:
        p = idx.name_person(person_id, name)
    click.echo(_person_line(p))


@people.command("merge")
@index_option
@click.argument("keep", type=int)
@click.argument("other", type=int)
@click.pass_context
def merge_cmd(ctx: click.Context, index_path: Path | None, keep: int, other: int) -> None:
    """Make person OTHER part of person KEEP (their faces are one person's)."""
    with open_index(_index_of(ctx, index_path)) as idx:
        p = idx.merge_persons(keep, other)
    click.echo(_person_line(p))


@people.command("move")
@index_option
@click.argument("face_id", type=int)
@click.argument("person_id")
@click.pass_context
def move_cmd(ctx: click.Context, index_path: Path | None, face_id: int, person_id: str) -> None:
    """Put face FACE_ID in person PERSON_ID ('new': a person of its own); it stays there."""
    if person_id != "new" and not person_id.isdigit():
        raise click.BadParameter("a person id (a whole number) or 'new'", param_hint="PERSON_ID")
    with open_index(_index_of(ctx, index_path)) as idx:
        p = idx.move_face(face_id, None if person_id == "new" else int(person_id))
    click.echo(_person_line(p))


@people.command("not")
@index_option
@click.argument("face_id", type=int)
@click.argument("person_id", type=int)
@click.pass_context
def not_cmd(ctx: click.Context, index_path: Path | None, face_id: int, person_id: int) -> None:
    """Face FACE_ID is not person PERSON_ID: it leaves the person and never joins it again."""
    with open_index(_index_of(ctx, index_path)) as idx:
        idx.reject_face(face_id, person_id)
    click.echo(f"Face {face_id} is not person {person_id}.", err=True)


@people.command("hide")
@index_option
@click.argument("person_id", type=int)
@click.option("--undo", is_flag=True, help="Show the person again.")
@click.pass_context
def hide_cmd(ctx: click.Context, index_path: Path | None, person_id: int, undo: bool) -> None:
    """Hide person PERSON_ID from the list (strangers, statues, posters); --undo shows it again."""
    with open_index(_index_of(ctx, index_path)) as idx:
        idx.hide_person(person_id, not undo)
    click.echo(f"Person {person_id} {'shown' if undo else 'hidden'}.", err=True)


for _fix in people.commands.values():  # -q/-v after a subcommand's name too
    verbosity_options(_fix)
