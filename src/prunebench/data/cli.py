"""CLI commands of the data layer (``prunebench data prepare|verify|classes``), registered on
the app by ``register(app)``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from prunebench.console import fail as _fail
from prunebench.errors import DataError, PrunebenchError

_err = Console(stderr=True)
_out = Console() if sys.stdout.isatty() else Console(width=160)

PREPARABLE = ("imagenet", "imagenet100")

data_app = typer.Typer(
    help="Prepare and check dataset stores (ImageNet, ImageNet-100).",
    no_args_is_help=True,
    add_completion=False,
)




def _say(text: str) -> None:
    _out.print(text, markup=False, highlight=False, soft_wrap=True)


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB"


@data_app.command("prepare")
def prepare_cmd(
    name: Annotated[str, typer.Argument(help="imagenet or imagenet100")],
    src: Annotated[Path, typer.Argument(help="ImageNet tree: train/<wnid>/, val/<wnid>/")],
    out: Annotated[Path, typer.Option("--out", help="folder of the store to write")],
    classes: Annotated[str | None, typer.Option(
        "--classes", help="class list file (one wnid a line) or 'imagenet100' (CMC's list; "
        "the default for imagenet100)")] = None,
    size: Annotated[int, typer.Option(
        "--size", help="stored side S: short side resized to S, centre S x S")] = 160,
    workers: Annotated[int | None, typer.Option(
        "--workers", help="decoding threads (default: CPU cores, at most 8)")] = None,
    shard_images: Annotated[int, typer.Option(
        "--shard-images", help="images per shard file")] = 1024,
    quiet: Annotated[bool | None, typer.Option(
        "--quiet/--progress", "-q", help="progress lines on stderr (default: on a terminal)")
    ] = None,
) -> None:
    """Convert an ImageNet tree (or a class subset) once into a memory-mapped store.

    Resumable: rerun the same command after an interruption and finished shards are kept.
    """
    from prunebench.data.imagenet import prepare_store, read_class_list, store_bytes

    try:
        if name not in PREPARABLE:
            raise DataError(f"cannot prepare dataset {name!r}; allowed: {', '.join(PREPARABLE)}")
        spec = classes if classes is not None else ("imagenet100" if name == "imagenet100"
                                                    else None)
        wanted = read_class_list(spec) if spec is not None else None
        if name == "imagenet100" and wanted is not None and len(wanted) != 100:
            raise DataError(f"imagenet100 needs 100 classes; class list {spec} names "
                            f"{len(wanted)}")
        show = not quiet if quiet is not None else _err.is_terminal
        last = [-1]

        def progress(done: int, total: int) -> None:
            step = max(1, total // 20)
            if show and (done == total or done - last[0] >= step):
                last[0] = done
                _err.print(f"  shards {done}/{total}", highlight=False)

        result = prepare_store(src, out, classes=wanted, size=size, workers=workers,
                               shard_images=shard_images, progress=progress)
    except PrunebenchError as exc:
        _fail(exc)
    m = result.manifest
    counts = {s: m["splits"][s]["count"] for s in m["splits"]}
    state = ("already complete" if result.already_complete else
             f"{result.shards_written} shards written, {result.shards_kept} kept")
    _say(f"{name} store at {result.path}: {m['num_classes']} classes, {counts['train']} train "
         f"/ {counts['val']} val images at {m['size']}px, {_gb(store_bytes(m))} ({state})")
    _say(f"use it with: --set data.name={name} --set data.data_dir={result.path}")


@data_app.command("verify")
def verify_cmd(
    path: Annotated[Path, typer.Argument(help="a store folder")],
) -> None:
    """Re-hash every file of a store against its manifest (reads the whole store)."""
    from prunebench.data.imagenet import store_bytes
    from prunebench.data.shards import open_store

    try:
        store = open_store(path, verify=True)
    except PrunebenchError as exc:
        _fail(exc)
    _say(f"ok: {store.path} ({len(store.classes)} classes, {_gb(store_bytes(store.manifest))}, "
         f"content {store.identity[:16]})")


@data_app.command("classes")
def classes_cmd(
    name: Annotated[str, typer.Argument(help="a built-in class list: imagenet100")],
) -> None:
    """Print a built-in class list, one wnid a line (to save and edit as a --classes file)."""
    from prunebench.data.imagenet import BUILTIN_CLASS_LISTS

    if name not in BUILTIN_CLASS_LISTS:
        _fail(DataError(f"no built-in class list {name!r}; built-in: "
                        f"{', '.join(BUILTIN_CLASS_LISTS)}"))
    for wnid in BUILTIN_CLASS_LISTS[name]:
        typer.echo(wnid)


def register(app: typer.Typer) -> None:
    """Add the ``data`` command group to the prunebench CLI."""
    app.add_typer(data_app, name="data")
