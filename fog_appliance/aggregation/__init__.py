"""Aggregation strategies: pure numpy behind one small interface (``base.Strategy``).

``build_strategy`` makes the configured one; ``STRATEGIES`` names them all.
"""

from fog_appliance.aggregation.base import Accumulator, Aggregate, Strategy
from fog_appliance.aggregation.factory import STRATEGIES, build_strategy, make_strategy
from fog_appliance.aggregation.fedavg import FedAvg, FedProx
from fog_appliance.aggregation.fedbuff import FedBuff
from fog_appliance.aggregation.fednova import FedNova
from fog_appliance.aggregation.krum import Krum, MultiKrum
from fog_appliance.aggregation.robust import Median, TrimmedMean

__all__ = ["STRATEGIES", "Accumulator", "Aggregate", "FedAvg", "FedBuff", "FedNova",
           "FedProx", "Krum", "Median", "MultiKrum", "Strategy", "TrimmedMean",
           "build_strategy", "make_strategy"]
