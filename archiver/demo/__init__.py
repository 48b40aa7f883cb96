"""`archiver demo`: see the archiver work with no keys and no config, against fake providers on loopback.

Only the command line is here; the rest (media, plan, folder, run) is imported when the demo runs, so
`archiver run` pays nothing for it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

DEFAULT_DIR = "./archiver-demo"
DEFAULT_PORT = 8780


def add_parser(sub: Any) -> None:
    summary = "archive ~24 tasks from fake providers on 127.0.0.1 with the real daemon, then show the gallery"
    demo = sub.add_parser("demo", help=summary, description=summary + ". Needs no keys, no config and no network.")
    demo.add_argument("--dir", default=DEFAULT_DIR, type=Path,
                      help=f"the demo's folder: config, inbox, state and archive (default {DEFAULT_DIR});"
                           " a second run adds new tasks")
    demo.add_argument("--no-serve", action="store_true", help="exit once every task has ended")
    demo.add_argument("--port", type=int, default=DEFAULT_PORT,
                      help=f"serve the gallery on 127.0.0.1:PORT (default {DEFAULT_PORT})")


def cmd_demo(args: argparse.Namespace) -> int:
    try:
        from archiver.demo.run import demo

        return demo(args.dir, None if args.no_serve else args.port)
    except KeyboardInterrupt:  # before the daemon or the gallery took Ctrl-C over
        print(f"\ndemo: stopped; `archiver demo --dir {args.dir}` again finishes what was queued", file=sys.stderr)
        return 130
