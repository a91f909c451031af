"""Mosquitto: its configuration, password file and ACL (``conf.py``: generated from the
device registry, pure) and a private broker process for development, tests and the demo
(``process.py``: the only broker code that does process I/O)."""

from fog_appliance.broker.conf import (
    DEFAULT_LIMITS,
    MIB,
    PACKET_MARGIN,
    PBKDF2_ITERATIONS,
    BrokerFiles,
    BrokerLimits,
    Listener,
    broker_limits,
    fog_username,
    hash_password,
    render_acl,
    render_conf,
    render_mosquitto_conf,
    render_passwd,
)
from fog_appliance.broker.process import (
    PR_SET_PDEATHSIG,
    PrivateBroker,
    find_mosquitto,
    fog_password,
    free_port,
    reload_broker,
    wait_for_credentials,
)

__all__ = [
    'DEFAULT_LIMITS', 'MIB', 'PACKET_MARGIN', 'PBKDF2_ITERATIONS', 'PR_SET_PDEATHSIG',
    'BrokerFiles', 'BrokerLimits', 'Listener', 'PrivateBroker', 'broker_limits',
    'find_mosquitto', 'fog_password', 'fog_username', 'free_port', 'hash_password',
    'reload_broker', 'render_acl', 'render_conf', 'render_mosquitto_conf', 'render_passwd',
    'wait_for_credentials',
]
