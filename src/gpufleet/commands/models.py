"""`gpufleet models [ID]`: the bundled model catalog and where each fact came from."""

from __future__ import annotations

import argparse
import json

from rich.table import Table

from gpufleet.commands import SUMMARIES
from gpufleet.env import Environment
from gpufleet.errors import ExitStatus
from gpufleet.gpu.models import GIB
from gpufleet.vllm.models import catalog_ids, find_model


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
    table = Table(box=None, header_style="bold")
    for col in ("model", "architecture", "params (B)", "weights GiB", "KV KiB/token", "max len"):
        table.add_column(col)
    for f in facts:
        table.add_row(
            f.model_id,
            f.architecture,
            f"{f.param_count / 1e9:.2f}",
            f"{f.weight_bytes() / GIB:.1f}",
            f"{f.kv_bytes_per_token(1) / 1024:g}",
            str(f.max_position_embeddings or "—"),
        )
    env.out.print(table)
    if args.model:
        for source in facts[0].sources:
            env.out.print(f"  source: {source}")
    return ExitStatus.OK
