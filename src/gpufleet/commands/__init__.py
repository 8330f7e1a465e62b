"""Subcommands: each module exposes add_parser(subparsers) and run(args, env)."""
