"""``fog-appliance demo``: a fog node and simulated edges on loopback, on a real dataset."""
