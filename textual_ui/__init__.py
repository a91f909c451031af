"""The on-site console of a fog node (Textual): ``fog-console``. It talks only to the
node's admin API (fog_appliance/admin); see docs/console.md."""

__version__ = "0.1.0"
