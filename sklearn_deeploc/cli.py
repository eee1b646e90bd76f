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
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser(
        "demo", help="pretrain on a synthetic screen, transfer to another, write a report"
    )
    demo.add_argument("-o", "--output", default="deeploc-demo", help="output folder")
    demo.add_argument("--quick", action="store_true", help="a smaller run (under 2 minutes)")
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    demo.set_defaults(handler=_demo)
    return parser


def _demo(args):
    from .demo import run_demo

    run_demo(args.output, quick=args.quick, random_state=args.seed)
    return 0


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
