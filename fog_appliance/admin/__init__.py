"""The fog node's local admin API (``aiohttp``): a Unix socket, optionally loopback HTTP
with a bearer token; JSON reads, logged actions, a live event stream and Prometheus
``/metrics``. The console (``textual_ui``) is its main client. See docs/admin-api.md."""
