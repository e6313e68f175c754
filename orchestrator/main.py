"""`python -m orchestrator.main [--config PATH] [--resume RUN_DIR] [key=value ...]`

Runs a whole MACPO or WSPO job: on a local Ray by default, or on the cluster in RAY_ADDRESS (as under
`ray job submit`). Bad configuration, data or paths end with exit code 2 and one line naming the
culprit; a failure during the run ends with exit code 1 and one line, never a traceback wall.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from orchestrator.config import config_for_resume, load_config
from orchestrator.run_report import format_table  # noqa: F401 - the CLI's closing table
from tasks.errors import BadInput

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.main",
        description="Multi-agent weak-to-strong alignment (MACPO / WSPO) on Ray.",
        epilog="Overrides, in Hydra's grammar: key=value sets (rounds=1 teachers.count=5 ablation.hard_negatives=false), "
               "+key=value adds a key the config file does not set, ++key=value sets either way, ~key brings back the "
               "default; a value may reference another key as ${key} (output_dir=runs/seed_${seed}). Config files "
               "compose with a `defaults:` list. Every key with its default and meaning: --help-config [PREFIX], "
               "e.g. --help-config resources.student",
    )
    parser.add_argument("--config", default=None, help="YAML run config (default: configs/default.yaml)")
    parser.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue a run from its last complete round")
    parser.add_argument("--quiet", action="store_true", help="no progress bars, warnings only")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config (credentials redacted) and exit, starting nothing")
    parser.add_argument("--dry-run", action="store_true",
                        help="validate the config and run its preflight (GPU memory, storage, extras) without Ray, then exit")
    parser.add_argument("--debug", action="store_true", help="on failure, print the whole traceback too")
    parser.add_argument("--help-config", nargs="?", const="", default=None, metavar="PREFIX",
                        help="list every config key (or those under PREFIX) with its default and meaning, and exit")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    return parser.parse_intermixed_args(argv)  # key=value may follow options


def causes(exc: BaseException) -> list[BaseException]:
    """The error and its causes, outermost first (Ray wraps actor errors in RayTaskError)."""
    chain = [exc]
    while True:
        inner = getattr(chain[-1], "cause", None) or chain[-1].__cause__
        if inner is None or any(inner is c for c in chain):
            return chain
        chain.append(inner)


def is_bad_input(exc: BaseException) -> bool:
    """Bad input is an error type, not a message: any `BadInput` in the chain of causes."""
    return any(isinstance(c, BadInput) for c in causes(exc))


def one_line(exc: BaseException) -> str:
    """The innermost cause of an error as one line."""
    cause = causes(exc)[-1]
    text = str(cause).strip().splitlines()
    message = next((line for line in reversed(text) if line.strip() and not line.startswith(" ")), type(cause).__name__)
    return f"{type(cause).__name__}: {message}"


def write_error_log(run_dir: str | None, exc: BaseException) -> str | None:
    """The whole traceback (a Ray task's remote one included) to `<run_dir>/error.log`, where the run
    directory exists; the terminal keeps its one line. Returns where it went."""
    import traceback

    from agents import storage

    if not run_dir or (storage.is_local(run_dir) and not os.path.isdir(storage.local_path(run_dir))):
        return None
    target = storage.join(run_dir, "error.log")
    try:
        storage.write_bytes(target, "".join(traceback.format_exception(exc)).encode())
    except Exception:  # noqa: BLE001 - the one line already said what failed
        return None
    return target


def inspect_config(args: argparse.Namespace) -> int:
    """--print-config / --dry-run: load and check the config, start nothing, write nothing."""
    import yaml

    from orchestrator.config import ConfigError, preflight
    from orchestrator.redaction import redact

    try:
        config = load_config(args.config, args.overrides)
        if args.print_config:
            print(yaml.safe_dump(redact(config.to_dict()), sort_keys=False), end="")
        if args.dry_run:
            preflight(config)
            print(f"config ok: {config.algorithm}, {config.rounds} rounds, student {config.student.name_or_path} "
                  f"({config.resources.student.ranks} rank{'s' if config.resources.student.ranks > 1 else ''}), "
                  f"{config.teachers.count} teachers; preflight passed")
    except (BadInput, ConfigError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.help_config is not None:
        from orchestrator.config_help import render

        text = render(args.help_config)
        if not text:
            print(f"error: no config key starts with {args.help_config!r}", file=sys.stderr)
            return EXIT_BAD_INPUT
        print(text)
        return 0
    if args.print_config or args.dry_run:
        return inspect_config(args)
    try:
        if args.resume:
            from orchestrator.run_dir import RunDirectory

            run_dir = RunDirectory(args.resume)
            try:
                saved = run_dir.read_config()
            finally:
                run_dir.close()
            config = config_for_resume(saved, args.overrides)  # overrides only give redacted credentials again
        else:
            from orchestrator.run_dir import ensure_output_dir, shown_path

            config = load_config(args.config, args.overrides)
            print(f"run directory: {shown_path(ensure_output_dir(config))}", flush=True)
        if args.quiet:
            config.progress = False
    except (BadInput, FileNotFoundError) as exc:  # a bad config, or a --resume that is no run (local or URI)
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from orchestrator.api import run

    try:
        summary = run(config, resume_dir=args.resume, sigterm_as_interrupt=True)
    except KeyboardInterrupt:
        print(f"interrupted; continue with: python -m orchestrator.main --resume {args.resume or config.output_dir}",
              file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one clear line, never a traceback wall
        print(f"error: {one_line(exc)}", file=sys.stderr)
        logged = None if is_bad_input(exc) else write_error_log(args.resume or config.output_dir, exc)
        if logged:
            print(f"traceback: {logged}", file=sys.stderr)
        if args.debug:
            import traceback

            traceback.print_exception(exc, file=sys.stderr)
        return EXIT_BAD_INPUT if is_bad_input(exc) else EXIT_FAILED
    print()
    print(format_table(summary))
    print(f"\nrun directory: {summary['run_dir']}  ({summary.get('total_wall_s', 0):.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
