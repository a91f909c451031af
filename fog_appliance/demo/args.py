"""The demo's learning flags (``--strategy``, ``--byzantine``, ``--dp-epsilon``,
``--async``, ``--compression`` …): added to the ``demo`` parser by ``cli.py`` and turned
into :class:`~fog_appliance.demo.options.DemoOptions` fields, each checked with a
ConfigError naming the flag."""

from __future__ import annotations

import argparse
from typing import Any

from fog_appliance.config import strategy_names
from fog_appliance.demo.byzantine import ATTACKS, DEFAULT_SCALE
from fog_appliance.errors import ConfigError
from fog_appliance.protocol.compression import NAMES, Compression


def add_learning_arguments(p: argparse.ArgumentParser) -> None:
    names = ", ".join(strategy_names())
    p.add_argument("--strategy", default="fedavg", metavar="NAME[,NAME…]",
                   help=f"aggregation strategies to compare, one run each ({names})")
    p.add_argument("--byzantine", type=float, default=0.0, metavar="FRACTION",
                   help="fraction of edges that send corrupted updates (default 0)")
    p.add_argument("--attack", choices=ATTACKS, default="sign_flip",
                   help="what byzantine edges send (default sign_flip)")
    p.add_argument("--attack-scale", type=float, default=DEFAULT_SCALE, metavar="S",
                   help=f"attack strength (default {DEFAULT_SCALE:g})")
    p.add_argument("--dp-epsilon", type=float, default=None, metavar="EPS",
                   help="central DP at the fog: total epsilon over the demo's rounds")
    p.add_argument("--clip-norm", type=float, default=None, metavar="C",
                   help="bound each update's L2 norm (default: none; 1.0 with DP)")
    p.add_argument("--async", dest="asynchronous", action="store_true",
                   help="asynchronous FedBuff rounds with edges of different speeds")
    p.add_argument("--compression", choices=NAMES, default="none",
                   help="update encoding the edges use (default none = float32)")
    p.add_argument("--topk-fraction", type=float, default=0.1, metavar="F",
                   help="share of entries top-k compression sends (default 0.1)")


def learning_options(args: argparse.Namespace) -> dict[str, Any]:
    """DemoOptions fields from the parsed flags (ConfigError naming a bad flag)."""
    known = set(strategy_names())
    strategies = tuple(s.strip() for s in str(args.strategy).split(",") if s.strip())
    bad = [s for s in strategies if s not in known]
    if not strategies or bad:
        raise ConfigError("--strategy", "strategy",
                          f"{', '.join(bad) or 'nothing'} is not one of "
                          f"{', '.join(sorted(known))}")
    if not 0.0 <= args.byzantine < 0.5:
        raise ConfigError("--byzantine", "byzantine",
                          f"{args.byzantine}: must be in [0, 0.5)")
    if not args.attack_scale > 0:
        raise ConfigError("--attack-scale", "attack_scale", f"{args.attack_scale}: must be > 0")
    if args.dp_epsilon is not None and not args.dp_epsilon > 0:
        raise ConfigError("--dp-epsilon", "dp_epsilon", f"{args.dp_epsilon}: must be > 0")
    if args.clip_norm is not None and not args.clip_norm > 0:
        raise ConfigError("--clip-norm", "clip_norm", f"{args.clip_norm}: must be > 0")
    try:
        Compression.named(args.compression, args.topk_fraction)
    except ValueError as exc:
        raise ConfigError("--topk-fraction", "topk_fraction", str(exc)) from None
    return {"strategies": strategies, "byzantine": args.byzantine, "attack": args.attack,
            "attack_scale": args.attack_scale, "dp_epsilon": args.dp_epsilon,
            "clip_norm": args.clip_norm, "asynchronous": args.asynchronous,
            "compression": args.compression, "topk_fraction": args.topk_fraction}
