"""Aggregation strategies: pure numpy behind one small interface (``base.Strategy``)."""

from fog_appliance.aggregation.base import Accumulator, Aggregate, Strategy
from fog_appliance.aggregation.fedavg import FedAvg

STRATEGIES: dict[str, type[Strategy]] = {"fedavg": FedAvg}


def make_strategy(name: str) -> Strategy:
    return STRATEGIES[name]()


__all__ = ["STRATEGIES", "Accumulator", "Aggregate", "FedAvg", "Strategy", "make_strategy"]
