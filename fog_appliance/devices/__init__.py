"""The devices a node knows: provisioning (keys, broker credentials, device configs) and the
registry the intake checks every update against."""
