"""The fog node's ClientApp: the shim that ships with fog-appliance on every fog node."""

from fog_appliance.cloud.clientapp import app as fog_shim

app = fog_shim
