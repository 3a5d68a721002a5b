"""`edgecls data ...`: prepare Fashion-MNIST as an ImageFolder tree, and check a dataset folder."""
from __future__ import annotations

from pathlib import Path

import typer

from edgecls.cli.common import err_console, print_json, print_table, say, warn

app = typer.Typer(help="Prepare and check image-folder datasets.", no_args_is_help=True)


@app.command("fashion-mnist")
def fashion_mnist_command(
    out: Path = typer.Argument(..., help="Folder to create: OUT/train/<class>/*.png and OUT/test/<class>/*.png."),
    per_class: int | None = typer.Option(None, "--per-class", help="Images per class in each split (seeded subset); default: all."),
    source: Path | None = typer.Option(
        None, "--source", help="Folder with the four IDX files [default: the Debian package, then the cache]."),
    seed: int = typer.Option(0, "--seed", help="Seed of the per-class subset."),
    download: bool = typer.Option(True, "--download/--no-download", help="Download when no local copy is found."),
) -> None:
    """Write Fashion-MNIST (28x28 grayscale PNGs, 10 classes) as an ImageFolder tree."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from edgecls.data.fashion_mnist import write_fashion_mnist
    from edgecls.fsutil import check_outputs

    check_outputs({"OUT": out}, {"--source": source})
    columns = (TextColumn("writing PNGs"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task("write", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        summary = write_fashion_mnist(out, per_class=per_class, source=source, seed=seed, download=download, progress=progress)
    classes = summary["classes"]
    counts = summary["counts"]
    rows = [(name, counts["train"][name], counts["test"][name]) for name in classes]
    rows.append(("total", summary["total"]["train"], summary["total"]["test"]))
    print_table("Fashion-MNIST", ["class", "train", "test"], rows)
    origin = "downloaded to" if summary["downloaded"] else "read from"
    say(f"IDX files {origin} {summary['source']}")
    say(f"wrote {summary['out']}")


@app.command("check")
def check_command(
    folder: Path = typer.Argument(..., help="ImageFolder tree: a folder per class, or train/ val/ test/ of them."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON only."),
) -> None:
    """Classes, split counts, imbalance, image sizes, unreadable files, duplicate images, and classes a flip would swap."""
    from edgecls.data.check import check_dataset

    report = check_dataset(folder)
    if as_json:
        print_json(report)
        return
    counts = report["counts"]
    settings = report["split_settings"]
    carved = f"val {settings['val_split']:g}, test {settings['test_split']:g}, seed {settings['seed']}"
    layout = "pre-split (train/ val/ test/)" if report["presplit"] else f"class folders (carved: {carved})"
    print_table(
        "dataset",
        ["", "value"],
        [
            ("folder", report["root"]),
            ("layout", layout),
            ("classes", len(report["classes"])),
            ("fingerprint", report["fingerprint"]),
            ("imbalance (max/min train)", report["imbalance_ratio"]),
            ("image modes", ", ".join(f"{m}: {n}" for m, n in report["modes"].items())),
        ],
    )
    rows = [(name, *(counts[s][name] for s in ("train", "val", "test"))) for name in report["classes"]]
    rows.append(("total", *(report["totals"][s] for s in ("train", "val", "test"))))
    print_table("images per class", ["class", "train", "val", "test"], rows)
    size = report["image_size"]
    print_table(
        "image size (pixels)",
        ["", "min", "median", "max"],
        [(axis, *(size[axis][k] for k in ("min", "median", "max"))) for axis in ("width", "height")],
    )
    if report["unreadable"]:
        print_table("unreadable files (skipped)", ["file", "reason"], [(u["path"], u["reason"]) for u in report["unreadable"]])
    if report["duplicates"]:
        rows = [
            (", ".join(f"{f['path']}" for f in d["files"]), "yes" if d["cross_split"] else "no", "yes" if d["cross_class"] else "no")
            for d in report["duplicates"]
        ]
        print_table("identical files", ["files", "across splits", "across classes"], rows)
    for message in report["warnings"]:
        warn(message)


@app.command("video")
def video_command(
    folder: Path = typer.Argument(..., help="Folder of images (searched recursively), e.g. DATA/test."),
    out: Path = typer.Argument(..., help="Video file to write (.mp4 or .avi)."),
    frames: int = typer.Option(120, "--frames", help="Frames to write."),
    fps: float = typer.Option(30.0, "--fps", help="Frame rate of the video."),
    width: int = typer.Option(640, "--width", help="Frame width in pixels."),
    height: int = typer.Option(480, "--height", help="Frame height in pixels."),
    hold: int = typer.Option(5, "--hold", help="Frames each image stays on screen."),
) -> None:
    """Write a video from images: a stand-in camera for `edgecls camera --device VIDEO`."""
    from edgecls.data.video import images_to_video
    from edgecls.fsutil import check_outputs

    check_outputs({"OUT": out}, {"FOLDER": folder})
    summary = images_to_video(folder, out, frames, fps, (height, width), hold)
    say(f"wrote {summary['video']}: {frames} frames at {fps:g} fps, {width}x{height}, {len(summary['images'])} images")
