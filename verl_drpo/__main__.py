"""Command line: ``python -m verl_drpo doctor [--quick] [--json] [--py-executable CMD] [--runtime-env JSON|FILE]``
, ``python -m verl_drpo overrides LOSS_MODE`` and ``python -m verl_drpo docs [--write]`` (the docs' tables generated
from the table of loss modes, ``verl_drpo.doc_tables``).

``doctor``: will verl load the DRPO losses in the driver, a fresh process and a Ray worker
(``verl_drpo.launch.doctor``). ``overrides`` prints, one per line, the Hydra overrides that select a loss mode with
its paper settings (``verl_drpo.modes.recipe_overrides``, each value taken from its recipe variable when set); the
recipes read them with ``mapfile``.
"""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m verl_drpo", description="verl-drpo tools")
    sub = parser.add_subparsers(dest="command", required=True)
    doctor_parser = sub.add_parser("doctor", help="check that verl loads the DRPO losses everywhere")
    doctor_parser.add_argument("--quick", action="store_true", help="skip the Ray worker check (about 20 s)")
    doctor_parser.add_argument("--json", action="store_true", help="print the report as JSON")
    doctor_parser.add_argument("--py-executable", default=None, metavar="CMD",
                               help="also start a Ray worker under this interpreter command, as "
                                    "ray_kwargs.ray_init.runtime_env.py_executable does (e.g. 'uv run')")
    doctor_parser.add_argument("--runtime-env", default=None, metavar="JSON|FILE",
                               help="also start a Ray worker with this runtime_env (the mapping under "
                                    "ray_kwargs.ray_init.runtime_env, as JSON text or a JSON/YAML file)")
    overrides_parser = sub.add_parser("overrides", help="print the Hydra overrides that select a loss mode")
    overrides_parser.add_argument("loss_mode")
    docs_parser = sub.add_parser("docs", help="check (or --write) the docs' tables generated from verl_drpo/modes.py")
    docs_parser.add_argument("--write", action="store_true", help="rewrite the out-of-date tables")
    args = parser.parse_args(argv)
    if args.command == "docs":
        from verl_drpo import doc_tables

        if args.write:
            changed = doc_tables.write()
            print("rewrote " + ", ".join(changed) if changed else "the generated tables are up to date")
            return 0
        stale = doc_tables.stale()
        if stale:
            print(f"out of date: {', '.join(stale)}; run python -m verl_drpo docs --write", file=sys.stderr)
            return 1
        print("the generated tables are up to date")
        return 0
    if args.command == "doctor":
        from verl_drpo.launch import doctor

        runtime_env = None
        if args.py_executable is not None or args.runtime_env is not None:
            try:
                runtime_env = doctor.build_runtime_env(args.py_executable, args.runtime_env)
            except ValueError as err:
                print(f"doctor: {err}", file=sys.stderr)
                return 2
        return doctor.doctor(quick=args.quick, as_json=args.json, runtime_env=runtime_env)
    if args.command == "overrides":
        from verl_drpo import modes

        try:
            modes.get(args.loss_mode)
        except ValueError as err:
            print(f"LOSS_MODE={args.loss_mode}: {err}", file=sys.stderr)
            return 2
        try:
            print("\n".join(modes.recipe_overrides(args.loss_mode)))
        except ValueError as err:  # a hyper-parameter's variable; the message names it
            print(err, file=sys.stderr)
            return 2
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
