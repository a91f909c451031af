"""Rounds: the state machine as a table (``table.py``), the rules as a pure engine — events
in, commands out (``engine.py``) — the intake's port (``port.py``) and the async service that
performs the engine's commands (``service.py``). ``table`` and ``engine`` do no I/O."""

from fog_appliance.rounds.engine import Close, Command, Count, Persist, RoundEngine, Stale
from fog_appliance.rounds.table import (
    ADMITTING,
    CLOSED,
    TRANSITIONS,
    Admission,
    Claim,
    Event,
    IllegalTransition,
    Round,
    RoundPolicy,
    State,
    TagClaim,
)

__all__ = ["ADMITTING", "CLOSED", "TRANSITIONS", "Admission", "Claim", "Close", "Command",
           "Count", "Event", "IllegalTransition", "Persist", "Round", "RoundEngine",
           "RoundPolicy", "Stale", "State", "TagClaim"]
