"""The ``deeploc`` command line."""

import argparse
import sys

from . import __version__


def build_parser():
    """The argument parser of ``deeploc`` (one sub-command per job)."""
    parser = argparse.ArgumentParser(
        prog="deeploc", description="DeepLoc protein localization for yeast screens."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv=None):
    """Run ``deeploc`` with ``argv`` (defaults to ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
