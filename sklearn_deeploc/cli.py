"""The ``deeploc`` command line: arguments in, a job of :mod:`sklearn_deeploc.jobs` out.

Every argument is checked by the parser before a job starts. Errors a user
can fix are one line on stderr and exit code 2; Ctrl-C is exit code 130.
"""

import argparse
import sys
from contextlib import nullcontext
from pathlib import Path

from ._version import __version__
from .blocks import ResumableOutputError, write_table

INTERRUPTED = 130  # the shell's code for a process stopped by Ctrl-C
# Commands that keep their finished work across an interruption.
RESUMABLE_COMMANDS = ("train", "predict", "featurize", "screen")
# Options of ``train`` passed on as DeepLocClassifier parameters of the same name.
TRAIN_PARAMETERS = (
    "pretrained freeze max_iter lr batch_size device validation_fraction random_state precision "
    "checkpoint_interval"
).split()
# Options of a command that predicts, passed on to its job.
INFERENCE_OPTIONS = ("batch_size", "device", "precision", "overwrite")
LAYERS = ["fc2", "fc1", "conv8"]


def _argument_type(convert, accepts, expected):
    """An argparse type: ``convert(text)`` if ``accepts`` it, else "expected <expected>"."""

    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}; got {text!r}") from None
        if not accepts(value):
            raise argparse.ArgumentTypeError(f"expected {expected}; got {value}")
        return value

    return parse


positive_int = _argument_type(int, lambda value: value >= 1, "a positive integer")
fraction = _argument_type(float, lambda value: 0 <= value < 1, "a number in [0, 1)")
probability = _argument_type(float, lambda value: 0 < value < 1, "a number in (0, 1)")


def _add_inference(sub):
    """The options of a command that predicts: batches, device, arithmetic, output, Dask."""
    sub.add_argument("--batch-size", type=positive_int, default=128)
    sub.add_argument("--device", default="auto")
    sub.add_argument(
        "--precision",
        choices=["fp32", "bf16", "fp16", "int8"],
        default="fp32",
        help="inference arithmetic: bf16 (CPUs with AVX512-BF16, GPUs), fp16 (GPUs), "
        "int8 (x86 CPUs, calibrated on the first cells)",
    )
    sub.add_argument("--overwrite", action="store_true", help="start over (another model...)")
    sub.add_argument("--scheduler", help="address of a running dask.distributed scheduler")
    sub.add_argument("--workers", type=positive_int, help="start N local Dask worker processes")


def _add_field_sources(sub):
    """The fields of a screen: a cell table, a folder of fields, or an OME-Zarr plate."""
    sub.add_argument(
        "--coords",
        help="cell table: image names with a chN token, or a CellProfiler per-object table "
        "(Image_FileName_<CH>, ..._Location_Center_X/Y)",
    )
    sub.add_argument(
        "--images",
        help="with --coords, the folder its image names start from (default: the table's); "
        "without, a folder of fields whose cells come from --labels or are found",
    )
    sub.add_argument("--plate", help="OME-Zarr HCS plate (NGFF 0.4 or 0.5)")
    sub.add_argument(
        "--labels",
        help="label images, one cell per object: a folder of them (with --images) or the "
        "name of the plate's label images (with --plate); without, cells are found",
    )
    sub.add_argument(
        "--channels",
        nargs="+",
        help="channels in the model's order: chN tokens (default ch1 ch2), CellProfiler names "
        "after Image_FileName_ (default: all), or a plate's channel names or indices, digits "
        "naming none of its channels (default: the model's channel names)",
    )
    sub.add_argument(
        "--marker", type=int, default=1, help="channel cells are found in, without labels"
    )
    sub.add_argument("--layout", choices=["auto", "token", "cellprofiler", "stack"], default="auto")
    sub.add_argument("--image-column", default="Image Path")
    sub.add_argument("--x-column", help="column of x centres (default Center_X, or CellProfiler's)")
    sub.add_argument("--y-column", help="column of y centres (default Center_Y, or CellProfiler's)")


def build_parser():
    """The argument parser of ``deeploc`` (one sub-command per job)."""
    parser = argparse.ArgumentParser(
        prog="deeploc", description="DeepLoc protein localization for yeast screens."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name, handler, help_text):
        sub = commands.add_parser(name, help=help_text)
        sub.set_defaults(handler=handler)
        return sub

    demo = command(
        "demo", _demo, "pretrain on a synthetic screen, transfer to another, write a report"
    )
    demo.add_argument("-o", "--output", default="deeploc-demo", help="output folder")
    demo.add_argument("--quick", action="store_true", help="a smaller run (under 2 minutes)")
    demo.add_argument("--seed", type=int, default=0, help="random seed")

    train = command("train", _train, "train (or fine-tune) DeepLoc on a DeepLoc HDF5 file")
    train.add_argument("data", help="DeepLoc HDF5 file (data<k>/Index<k>)")
    train.add_argument("-o", "--output", required=True, help="model folder to write")
    train.add_argument("--pretrained", help="model folder or name (deeploc-chong) to fine-tune")
    train.add_argument("--freeze", choices=["conv"], help="train the FC layers only")
    train.add_argument("--max-iter", type=positive_int, help="optimizer steps (paper: 10000/500)")
    train.add_argument("--lr", type=float, help="initial learning rate")
    train.add_argument("--batch-size", type=positive_int, default=128)
    train.add_argument("--conv-channels", type=positive_int, nargs=8, metavar="N")
    train.add_argument("--fc-units", type=positive_int, nargs=2, metavar="N")
    train.add_argument("--validation-fraction", type=fraction, default=0.1)
    train.add_argument("--seed", type=int, default=0, dest="random_state", metavar="SEED")
    train.add_argument("--device", default="auto")
    train.add_argument("--overwrite", action="store_true", help="replace a model in OUTPUT")
    train.add_argument(
        "--precision",
        choices=["fp32", "bf16", "fp16"],
        default="fp32",
        help="training arithmetic: autocast with fp32 master weights (fp16: GPU only)",
    )
    train.add_argument(
        "--checkpoint-every",
        type=positive_int,
        metavar="N",
        dest="checkpoint_interval",
        help="steps between checkpoints in OUTPUT.checkpoint (default: every validation); "
        "rerunning the same command after an interruption resumes from the newest",
    )

    for name, help_text, default_output in (
        ("predict", "per-cell class probabilities and labels", "cells.csv"),
        ("featurize", "per-cell DeepLoc features", "features.parquet"),
    ):
        sub = command(name, _cell_job, help_text)
        sub.add_argument("model", help="model folder, or a registered name (deeploc-chong)")
        sub.add_argument("data", help="DeepLoc HDF5 file")
        sub.add_argument("-o", "--output", default=default_output, help=".csv or .parquet")
        sub.add_argument(
            "--block-size", type=positive_int, default=4096, help="cells per resumable block"
        )
        sub.add_argument(
            "--no-tta", action="store_true", help="centre crop only (default: the model's choice)"
        )
        _add_inference(sub)
        if name == "featurize":
            sub.add_argument("--layer", default="fc2", choices=LAYERS)

    crop = command("crop", _crop, "crop the cells of micrographs into a DeepLoc HDF5 training file")
    crop.add_argument(
        "-o", "--output", required=True, help="HDF5 file to write, its cells as OUTPUT.cells.csv"
    )
    _add_field_sources(crop)
    crop.add_argument("--label-column", help="column of cell labels (stored with label names)")
    crop.add_argument("--size", type=positive_int, default=64)
    crop.add_argument("--border", choices=["drop", "pad"], default="drop")
    crop.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")

    screen = command("screen", _screen, "predict and profile a screen's cells and wells")
    screen.add_argument("model", help="model folder, or a registered name (deeploc-chong)")
    screen.add_argument("-o", "--output", required=True, help="output folder")
    _add_field_sources(screen)
    screen.add_argument(
        "--well-pattern", default=r"r\d+c\d+", help="regular expression of the well in image names"
    )
    screen.add_argument("--border", choices=["pad", "drop"], default="pad")
    screen.add_argument("--features", choices=LAYERS, help="also write this layer's features")
    screen.add_argument("--csv", action="store_true", help="also write cells.csv and wells.csv")
    _add_inference(screen)

    changes = command(
        "changes",
        _changes,
        "localization changes between two screen outputs (A untreated, B treated)",
    )
    changes.add_argument("screen_a", help="output folder (or cells.parquet) of screen A")
    changes.add_argument("screen_b", help="output folder (or cells.parquet) of screen B")
    changes.add_argument("-o", "--output", default="changes.parquet", help=".parquet or .csv")
    changes.add_argument("--by", default="Metadata_Well", help="column grouping the cells")
    changes.add_argument("--prior", type=probability, default=0.01, help="prior of a change")

    importer = command(
        "import-tf",
        _import_tf,
        "convert the published DeepLoc TensorFlow checkpoint to a model folder",
    )
    importer.add_argument("checkpoint", help="checkpoint prefix, e.g. model.ckpt-5000")
    importer.add_argument("-o", "--output", required=True, help="model folder to write")
    importer.add_argument("--classes", nargs="+", help="output class names (default: Chong 19)")
    importer.add_argument("--channel-names", nargs="+", default=["GFP", "RFP"])

    fetch = command(
        "fetch", _fetch, "download the published DeepLoc model or datasets once, into the data home"
    )
    fetch.add_argument("what", choices=["model", "datasets"])
    fetch.add_argument(
        "--data-home", help="default: $SKLEARN_DEEPLOC_DATA or ~/sklearn_deeploc_data"
    )
    fetch.add_argument("--url", help="a mirror of the published archive")
    fetch.add_argument("--archive", help="the archive, downloaded by hand (works offline)")
    return parser


def _options(args, *names):
    """The arguments ``names`` as keywords of the same name."""
    return {name: getattr(args, name) for name in names}


def _train(args):
    """Run ``deeploc train``."""
    from .jobs import train

    params = _options(args, *TRAIN_PARAMETERS)
    for name in ("conv_channels", "fc_units"):  # unset: the classifier's default
        if getattr(args, name):
            params[name] = tuple(getattr(args, name))
    classifier = train(args.data, args.output, overwrite=args.overwrite, **params)
    print(f"trained {classifier.n_iter_} steps; model written to {args.output}")


def _client(args):
    """The Dask client of --scheduler or of a local --workers cluster, closed by ``with``."""
    if args.scheduler is None and args.workers is None:
        return nullcontext()
    from distributed import Client

    if args.scheduler:
        client = Client(args.scheduler)
    else:  # a client without an address starts a local cluster and closes it with itself
        client = Client(n_workers=args.workers, threads_per_worker=1, processes=True)
    print(f"Dask cluster: {client.dashboard_link}")
    return client


def _cell_job(args):
    """Run ``deeploc predict`` or ``deeploc featurize``."""
    from .jobs import featurize, predict

    job, options = predict, _options(args, "block_size", *INFERENCE_OPTIONS)
    if args.command == "featurize":
        job, options["layer"] = featurize, args.layer
    tta = False if args.no_tta else None
    with _client(args) as client:
        job(args.model, args.data, args.output, tta=tta, client=client, **options)
    print(f"wrote {args.output}")


def _source(args, label_column=None):
    """The field source arguments of a job: a cell table, a folder or a plate."""
    from .fields import read_cell_table

    if args.coords is not None:
        if args.plate or args.labels:
            raise ValueError("--coords names the cells; --plate and --labels are other sources.")
        cells = read_cell_table(
            args.coords,
            folder=args.images,
            label_column=label_column,
            **_options(args, "layout", "channels", "image_column", "x_column", "y_column"),
        )
        return {"cells": cells}
    if label_column:
        raise ValueError("--label-column needs --coords: only a cell table labels cells.")
    source = {"labels": args.labels, "marker": args.marker}
    if args.plate is not None:
        if args.images:
            raise ValueError("Give --plate or --images, not both.")
        return {"plate": args.plate, "channels": args.channels, **source}
    if args.images is None:
        raise ValueError("Give the fields: --coords TABLE, --images FOLDER or --plate PLATE.")
    return {"images": args.images, "channels": args.channels, **source}


def _screen(args):
    """Run ``deeploc screen``."""
    from .jobs import run_screen

    options = _options(args, "features", "well_pattern", "border", "csv", *INFERENCE_OPTIONS)
    with _client(args) as client:
        cells, wells = run_screen(
            args.model, args.output, **_source(args), client=client, **options
        )
    print(
        f"wrote {args.output}/cells.parquet ({len(cells)} cells, "
        f"{int(cells['Metadata_Padded'].sum())} padded at the border), wells.parquet "
        f"({len(wells)} wells) and cells.h5ad"
    )


def _crop(args):
    """Run ``deeploc crop``."""
    from .jobs import check_written_files, crop

    source = _source(args, label_column=args.label_column)
    table = Path(args.output).with_suffix(".cells.csv")
    check_written_files([table], source.get("cells"), overwrite=args.overwrite)
    kept = crop(args.output, **source, **_options(args, "size", "border", "overwrite"))
    write_table(kept, table)
    print(f"wrote {table}: the cell of each crop, in file order")


def _changes(args):
    """Run ``deeploc changes``."""
    from .jobs import write_changes

    table = write_changes(args.screen_a, args.screen_b, args.output, by=args.by, prior=args.prior)
    changed = table.loc[table["significant"].fillna(False).astype(bool), args.by].nunique()
    print(f"wrote {args.output} ({table[args.by].nunique()} groups, {changed} with a change)")


def _demo(args):
    """Run ``deeploc demo``."""
    from .demo import run_demo

    run_demo(args.output, quick=args.quick, random_state=args.seed)


def _fetch(args):
    """Run ``deeploc fetch``."""
    from .datasets import fetch_deeploc_datasets, fetch_deeploc_model

    options = _options(args, "data_home", "url", "archive")
    if args.what == "model":
        print(f"deeploc-chong: {fetch_deeploc_model(**options)}")
        return
    for name, path in fetch_deeploc_datasets(**options).items():
        print(f"{name}: {path}")


def _import_tf(args):
    """Run ``deeploc import-tf``."""
    from .tf_import import from_tf_checkpoint

    options = _options(args, "classes", "channel_names")
    model, mapping = from_tf_checkpoint(
        args.checkpoint, args.output, **options, verbose=1, return_mapping=True
    )
    print(
        f"imported {len(mapping)} tensors: {len(model.classes)} classes, "
        f"conv {model.architecture['conv_channels']}, fc {model.architecture['fc_units']}; "
        f"wrote {args.output}"
    )


def main(argv=None):
    """Run ``deeploc`` with ``argv`` (defaults to ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        args.handler(args)
    except KeyboardInterrupt as interrupt:
        detail = f" ({interrupt})" if str(interrupt) else ""
        resumes = ", and the same command resumes from what was kept"
        if args.command not in RESUMABLE_COMMANDS:
            resumes = "; run the command again to start over"
        print(
            f"deeploc {args.command}: interrupted{detail}; nothing unfinished was written as "
            f"finished{resumes}.",
            file=sys.stderr,
        )
        return INTERRUPTED
    except (OSError, ValueError, TypeError, ResumableOutputError) as error:
        # One line, whatever the library wrote, naming the option rather than the parameter.
        message = " ".join(str(error).split()).replace("overwrite=True", "--overwrite")
        print(f"deeploc {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
