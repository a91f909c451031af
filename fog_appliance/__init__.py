"""fog-appliance: the fog tier of federated learning, for Raspberry Pi gateways."""

__version__ = "0.1.0"
