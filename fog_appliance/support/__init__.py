"""Small shared helpers with no domain in them: asyncio (``aio``), retry delays
(``backoff``), the store's thread (``dbthread``), a worker thread for GIL-releasing CPU work
(``worker``), secret files (``secretfile``) and the local
HTTP pieces (``localhttp``). This ``__init__`` imports none of them, so the edge client can
use ``backoff`` without pulling aiohttp."""
