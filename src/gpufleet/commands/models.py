"""`gpufleet models [ID]`: the bundled model catalog and where each fact came from."""

from __future__ import annotations

import argparse
import json

from rich.console import Group
from rich.table import Table
from rich.text import Text

from gpufleet.commands import SUMMARIES
from gpufleet.env import Environment
from gpufleet.errors import ExitStatus
from gpufleet.gpu.models import GIB
from gpufleet.vllm.models import ModelFacts, catalog_ids, find_model


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    p = sub.add_parser("models", help=SUMMARIES["models"], description=__doc__)
    p.add_argument("model", nargs="?", help="show one model's facts")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace, env: Environment) -> int:
    ids = [args.model] if args.model else catalog_ids()
    facts = [find_model(i) for i in ids]
    if args.json:
        env.write_json(
            json.dumps(
                [
                    {
                        "model": f.model_id,
                        "architecture": f.architecture,
                        "params": f.param_count,
                        "weights_bf16_gib": round(f.weight_bytes() / GIB, 2),
                        "layers": f.num_layers,
                        "kv_bytes_per_token_tp1": f.kv_bytes_per_token(1),
                        "max_position_embeddings": f.max_position_embeddings,
                        "sources": list(f.sources),
                    }
                    for f in facts
                ],
                indent=2,
            )
        )
        return ExitStatus.OK
    env.out.print(catalog_view(facts, env.out.width))
    if args.model:
        for source in facts[0].sources:
            env.out.print(f"  source: {source}")
    return ExitStatus.OK



COLUMNS = ("architecture", "params (B)", "weights GiB", "KV KiB/token", "max len")


def _cells(f: ModelFacts) -> tuple[str, ...]:
    return (f.architecture, f"{f.param_count / 1e9:.2f}", f"{f.weight_bytes() / GIB:.1f}",
            f"{f.kv_bytes_per_token(1) / 1024:g}", str(f.max_position_embeddings or "—"))


def catalog_view(facts: list[ModelFacts], width: int) -> Table | Group:
    """A table when every model id fits whole; else one id per line with its facts under it:
    ids are what people copy, so they are never cut."""
    rows = [(f.model_id, *_cells(f)) for f in facts]
    widths = [max(len(r[i]) for r in [("model", *COLUMNS), *rows]) for i in range(6)]
    if sum(widths) + 2 * len(widths) <= width:
        table = Table(box=None, header_style="bold", pad_edge=False)
        table.add_column("model", no_wrap=True)
        for col in COLUMNS:
            table.add_column(col, no_wrap=True, justify="left" if col == "architecture"
                             else "right")
        for row in rows:
            table.add_row(*(Text(c) for c in row))
        return table
    return Group(*(Text.assemble((r[0], "bold"), "\n    ", f"{r[1]} · {r[2]}B · {r[3]} GiB · "
                                 f"{r[4]} KiB/tok · len {r[5]}")
                   for r in rows))
