"""The ``deeploc`` command line: train, predict, featurize, screen, demo."""

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from . import __version__
from .datasets import DeepLocHDF5Dataset

DEFAULT_BLOCK = 4096


def _add_train(commands):
    train = commands.add_parser("train", help="train (or fine-tune) DeepLoc on a DeepLoc HDF5 file")
    train.add_argument("data", help="DeepLoc HDF5 file (data<k>/Index<k>)")
    train.add_argument("-o", "--output", required=True, help="model folder to write")
    train.add_argument("--pretrained", help="model folder to fine-tune from")
    train.add_argument("--freeze", choices=["conv"], help="train the FC layers only")
    train.add_argument("--max-iter", type=int, help="optimizer steps (paper: 10000 / 500)")
    train.add_argument("--lr", type=float, help="initial learning rate")
    train.add_argument("--batch-size", type=int, default=128)
    train.add_argument("--conv-channels", type=int, nargs=8, metavar="N")
    train.add_argument("--fc-units", type=int, nargs=2, metavar="N")
    train.add_argument("--validation-fraction", type=float, default=0.1)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", default="auto")
    train.set_defaults(handler=_train)


def _add_predict_and_featurize(commands):
    for name, help_text, default_out in (
        ("predict", "per-cell class probabilities and labels", "cells.csv"),
        ("featurize", "per-cell DeepLoc features", "features.parquet"),
    ):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("model", help="model folder")
        sub.add_argument("data", help="DeepLoc HDF5 file")
        sub.add_argument("-o", "--output", default=default_out, help=".csv or .parquet")
        sub.add_argument(
            "--block-size", type=int, default=DEFAULT_BLOCK, help="cells per resumable block"
        )
        sub.add_argument("--batch-size", type=int, default=128)
        sub.add_argument("--no-tta", action="store_true", help="centre crop only")
        sub.add_argument("--device", default="auto")
        sub.add_argument("--scheduler", help="address of a running dask.distributed scheduler")
        sub.add_argument(
            "--workers", type=int, help="start a local Dask cluster of N worker processes"
        )
        if name == "featurize":
            sub.add_argument("--layer", default="fc2", choices=["fc2", "fc1", "conv8"])
        sub.set_defaults(handler=_predict if name == "predict" else _featurize)


def _add_screen(commands):
    screen = commands.add_parser(
        "screen", help="crop cells from micrographs, predict, aggregate per well"
    )
    screen.add_argument("model", help="model folder")
    screen.add_argument("--images", required=True, help="folder of the field images")
    screen.add_argument("--coords", required=True, help="CSV of cell centres (image, x, y columns)")
    screen.add_argument("-o", "--output", required=True, help="output folder")
    screen.add_argument(
        "--channels",
        nargs="+",
        default=["ch1", "ch2"],
        help="channel tokens substituted for the 'chN' in each image name, in "
        "the model's channel order (default: ch1 ch2)",
    )
    screen.add_argument("--image-column", default="Image Path")
    screen.add_argument("--x-column", default="Center_X")
    screen.add_argument("--y-column", default="Center_Y")
    screen.add_argument(
        "--well-pattern",
        default=r"r\d+c\d+",
        help="regular expression of the well in an image name",
    )
    screen.add_argument("--border", choices=["pad", "drop"], default="pad")
    screen.add_argument("--device", default="auto")
    screen.set_defaults(handler=_screen)


def _add_demo(commands):
    demo = commands.add_parser(
        "demo", help="pretrain on a synthetic screen, transfer to another, write a report"
    )
    demo.add_argument("-o", "--output", default="deeploc-demo", help="output folder")
    demo.add_argument("--quick", action="store_true", help="a smaller run (under 2 minutes)")
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    demo.set_defaults(handler=_demo)


def _add_import_tf(commands):
    importer = commands.add_parser(
        "import-tf", help="convert the published DeepLoc TensorFlow checkpoint to a model folder"
    )
    importer.add_argument("checkpoint", help="checkpoint prefix, e.g. model.ckpt-5000")
    importer.add_argument("-o", "--output", required=True, help="model folder to write")
    importer.add_argument("--classes", nargs="+", help="output class names (default: Chong 19)")
    importer.add_argument("--channel-names", nargs="+", default=["GFP", "RFP"])
    importer.set_defaults(handler=_import_tf)


def _import_tf(args):
    from .tf_import import from_tf_checkpoint

    model = from_tf_checkpoint(
        args.checkpoint,
        args.output,
        classes=args.classes,
        channel_names=args.channel_names,
        verbose=1,
    )
    print(
        f"imported {len(model.tf_mapping_)} tensors: {len(model.classes_)} classes, "
        f"conv {model.architecture_['conv_channels']}, fc {model.architecture_['fc_units']}; "
        f"wrote {args.output}"
    )
    return 0


def build_parser():
    """The argument parser of ``deeploc`` (one sub-command per job)."""
    parser = argparse.ArgumentParser(
        prog="deeploc", description="DeepLoc protein localization for yeast screens."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_add_demo, _add_train, _add_predict_and_featurize, _add_screen, _add_import_tf):
        add(commands)
    return parser


def _train(args):
    from .classifier import DeepLocClassifier
    from .datasets import load_deeploc_hdf5

    X, y = load_deeploc_hdf5(args.data)
    print(f"{args.data}: {len(X)} cells, {X.shape[1]} channels, {len(np.unique(y))} classes")
    params = {
        "pretrained": args.pretrained,
        "freeze": args.freeze,
        "max_iter": args.max_iter,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "device": args.device,
        "validation_fraction": args.validation_fraction,
        "random_state": args.seed,
        "verbose": 1,
    }
    if args.conv_channels:
        params["conv_channels"] = tuple(args.conv_channels)
    if args.fc_units:
        params["fc_units"] = tuple(args.fc_units)
    clf = DeepLocClassifier(**params).fit(X, y)
    print(f"trained {clf.n_iter_} steps; model written to {clf.save_pretrained(args.output)}")
    return 0


def block_table(estimator, data, start, stop):
    """Output rows of cells ``start:stop`` of a DeepLoc HDF5 file (runs on Dask workers too).

    A classifier gives ``cell``, one ``p_<class>`` column per class and
    ``label``; a featurizer gives ``cell`` and its feature columns.
    """
    from .featurizer import DeepLocFeaturizer

    X = DeepLocHDF5Dataset(data).read(np.arange(start, stop))[0]
    if isinstance(estimator, DeepLocFeaturizer):
        frame = pd.DataFrame(estimator.transform(X), columns=estimator.get_feature_names_out())
    else:
        frame = probability_table(estimator, estimator.predict_proba(X))
    frame.insert(0, "cell", np.arange(start, stop))
    return frame


def probability_columns(classifier):
    """Column names of the per-class probabilities: ``p_<class>``."""
    return [f"p_{c}" for c in classifier.classes_]


def probability_table(classifier, proba):
    """One ``p_<class>`` column per class and the most probable ``label``."""
    frame = pd.DataFrame(proba, columns=probability_columns(classifier))
    frame["label"] = classifier.classes_[np.asarray(proba).argmax(axis=1)]
    return frame


def _client(args):
    """A Dask client for --scheduler ADDRESS or --workers N, else None (in-process)."""
    if args.scheduler is None and args.workers is None:
        return None
    from distributed import Client, LocalCluster

    if args.scheduler:
        return Client(args.scheduler)
    return Client(LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True))


def _blockwise(args, estimator):
    from .blocks import run_blocks

    n_cells = len(DeepLocHDF5Dataset(args.data))
    print(f"{args.data}: {n_cells} cells")
    client = _client(args)
    try:
        model = estimator if client is None else client.scatter(estimator, broadcast=True)
        if client is not None:
            print(f"Dask cluster: {client.dashboard_link}")
        run_blocks(
            args.output, n_cells, args.block_size, block_table, model, args.data, client=client
        )
    finally:
        if client is not None:
            client.close()
    print(f"wrote {args.output}")
    return 0


def _predict(args):
    from .pretrained import load_pretrained

    clf = load_pretrained(args.model).set_params(
        tta=not args.no_tta, batch_size=args.batch_size, device=args.device
    )
    return _blockwise(args, clf)


def _featurize(args):
    from .featurizer import DeepLocFeaturizer

    first_cell = DeepLocHDF5Dataset(args.data).read([0])[0]
    featurizer = DeepLocFeaturizer(
        args.model,
        layer=args.layer,
        tta=not args.no_tta,
        batch_size=args.batch_size,
        device=args.device,
    )
    return _blockwise(args, featurizer.fit(first_cell))


def _read_field(folder, image_name, channels):
    from skimage.io import imread

    path = Path(folder) / image_name
    if not re.search(r"ch\d+", path.name):
        raise ValueError(f"{path.name} has no 'chN' channel token to substitute {channels} into.")
    files = [path.with_name(re.sub(r"ch\d+", token, path.name, count=1)) for token in channels]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise FileNotFoundError(f"channel images not found: {missing}")
    return np.stack([imread(f) for f in files])


def _screen(args):
    from tqdm.auto import tqdm

    from .blocks import read_table, write_table
    from .pretrained import load_pretrained
    from .screen import aggregate, crop_cells

    clf = load_pretrained(args.model).set_params(device=args.device)
    coords = pd.read_csv(args.coords)
    needed = [args.image_column, args.x_column, args.y_column]
    absent = [c for c in needed if c not in coords]
    if absent:
        raise ValueError(f"{args.coords} lacks columns {absent}; it has {list(coords.columns)}.")
    output = Path(args.output)
    parts = output / "fields"
    parts.mkdir(parents=True, exist_ok=True)
    fields = coords.groupby(args.image_column, sort=True)
    done = sum((parts / f"{Path(name).stem}.csv").exists() for name, _ in fields)
    print(f"{len(coords)} cells in {fields.ngroups} fields; {done} fields already done")
    for name, cells in tqdm(fields, unit="field"):
        part = parts / f"{Path(name).stem}.csv"
        if part.exists():
            continue
        image = _read_field(args.images, name, args.channels)
        result = crop_cells(
            image, cells, border=args.border, x_column=args.x_column, y_column=args.y_column
        )
        kept = cells.iloc[result.index]
        well = re.search(args.well_pattern, Path(name).name)
        table = pd.DataFrame(
            {
                "image": name,
                "well": well.group(0) if well else Path(name).stem,
                "x": kept[args.x_column].to_numpy(),
                "y": kept[args.y_column].to_numpy(),
                "padded": result.padded,
            }
        )
        if len(result.crops):
            proba = probability_table(clf, clf.predict_proba(result.crops))
            table = pd.concat([table, proba], axis=1)
        write_table(table, part)
    cells_table = pd.concat([read_table(p) for p in sorted(parts.glob("*.csv"))], ignore_index=True)
    write_table(cells_table, output / "cells.csv")
    columns = probability_columns(clf)
    wells = aggregate(cells_table[columns].to_numpy(), cells_table["well"], columns)
    wells["label"] = clf.classes_[wells[columns].to_numpy().argmax(axis=1)]
    write_table(wells.reset_index(), output / "wells.csv")
    print(
        f"wrote {output / 'cells.csv'} ({len(cells_table)} cells, "
        f"{int(cells_table['padded'].sum())} padded at the border) and "
        f"{output / 'wells.csv'} ({len(wells)} wells)"
    )
    return 0


def _demo(args):
    from .demo import run_demo

    run_demo(args.output, quick=args.quick, random_state=args.seed)
    return 0


def main(argv=None):
    """Run ``deeploc`` with ``argv`` (defaults to ``sys.argv[1:]``); returns the exit code.

    Errors a user can fix (a missing file, a wrong layout) are printed as one
    line and exit with code 2, without a traceback.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.handler(args)
    except (OSError, ValueError, TypeError) as error:  # OSError: missing or unreadable files
        print(f"deeploc {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
