"""The Flower ClientApp shim: a fog node takes part in a Flower federation as one client.

``flower-supernode`` runs this app (a fresh ``flwr-clientapp`` process per message). On a
**train** message it hands the global arrays and the round config to the fog's local cloud
API and waits — bounded by the round timeout — for the regional aggregate of a round
trained on them; it replies with the arrays (same keys as received), ``num-examples`` (the
sum over the edges that took part) and metrics (``updates``, ``edges``, ``rejected``,
``dp-epsilon``; ∞ means no differential-privacy guarantee). On an **evaluate** message (the
new global model after a cloud round) the fog puts the model in service for its edges at
once; the reply carries the last round's metrics.

The SuperNode's ``--node-config`` gives ``fog-api`` (base URL of the local API),
``fog-token-file`` and ``round-timeout``. A message config value ``fog-timeout`` overrides
the timeout per round. Errors become Flower error replies (the ServerApp sees a failure for
this node; the fog's aggregate stays in its outbox).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    Context,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp

from fog_appliance.cloud.wire import CloudReply, CloudRequest, decode_reply, encode_request
from fog_appliance.errors import CloudError, ProtocolError
from fog_appliance.protocol.model_blob import decode_model, encode_model
from fog_appliance.support.backoff import backoff_delays

FOG_UNREACHABLE = 1001
FOG_TIMEOUT = 1002
FOG_REFUSED = 1003
RETRY_STATUSES = (502, 503)

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    return forward("train", msg, context)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    return forward("evaluate", msg, context)


def forward(kind: str, msg: Message, context: Context) -> Message:
    """Hand a message to the fog and turn its answer into the reply."""
    content = msg.content
    records = list(content.array_records.values())
    if len(records) != 1:
        return Message(Error(FOG_REFUSED, f"expected one ArrayRecord, got {len(records)}"),
                       reply_to=msg)
    keys = list(records[0].keys())
    arrays = records[0].to_numpy_ndarrays()
    config: dict[str, Any] = {}
    for rec in content.config_records.values():
        config.update({k: v for k, v in rec.items() if isinstance(v, str | int | float | bool)})
    node = context.node_config
    timeout = float(config.get("fog-timeout", node.get("round-timeout", 600.0)))
    req = CloudRequest(int(msg.metadata.run_id), int(config.get("server-round", 0)), kind,
                       encode_model(0, arrays), config, timeout)
    try:
        reply = post(str(node.get("fog-api", "")), kind, encode_request(req),
                     read_token(node.get("fog-token-file")), timeout)
    except FogCallError as exc:
        return Message(Error(exc.code, str(exc)), reply_to=msg)
    metrics = MetricRecord({"num-examples": reply.num_examples, **reply.metrics})
    if kind != "train":
        return Message(RecordDict({"metrics": metrics}), reply_to=msg)
    try:
        out = decode_model(reply.blob, [a.shape for a in arrays]).tensors
    except ProtocolError as exc:
        return Message(Error(FOG_REFUSED, f"the fog's arrays are unusable: {exc}"),
                       reply_to=msg)
    record = ArrayRecord({k: Array(np.array(t)) for k, t in zip(keys, out, strict=True)})
    return Message(RecordDict({"arrays": record, "metrics": metrics}), reply_to=msg)


class FogCallError(CloudError):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def read_token(path: object) -> str | None:
    if not path:
        return None
    try:
        return Path(str(path)).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise FogCallError(FOG_UNREACHABLE, f"cannot read the fog's token: {exc}") from None


def post(api: str, kind: str, body: bytes, token: str | None, timeout: float) -> CloudReply:
    """POST to the fog's local API, retrying while it is down or restarting, until
    ``timeout`` seconds have passed."""
    if not api.startswith(("http://", "https://")):
        raise FogCallError(FOG_UNREACHABLE, f"node config fog-api={api!r} is not a URL")
    deadline = time.monotonic() + timeout
    headers = {"Content-Type": "application/octet-stream"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    delays = backoff_delays(initial=0.5, maximum=10.0)
    last = "no attempt"
    while (remaining := deadline - time.monotonic()) > 0:
        request = urllib.request.Request(f"{api.rstrip('/')}/{kind}", data=body,
                                         headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=remaining + 5) as resp:
                return decode_reply(resp.read())
        except urllib.error.HTTPError as exc:
            detail = _error_text(exc)
            if exc.code == 504:
                raise FogCallError(FOG_TIMEOUT, f"fog: {detail}") from None
            if exc.code not in RETRY_STATUSES:
                raise FogCallError(FOG_REFUSED, f"fog answered {exc.code}: {detail}") from None
            last = f"{exc.code}: {detail}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(getattr(exc, "reason", exc))
        except CloudError as exc:
            raise FogCallError(FOG_REFUSED, f"fog reply unusable: {exc}") from None
        time.sleep(max(0.0, min(next(delays), deadline - time.monotonic())))
    raise FogCallError(FOG_UNREACHABLE, f"fog API {api} not reachable in {timeout:.0f} s "
                       f"({last})")


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(exc.read()).get("error", exc.reason))
    except (ValueError, OSError, AttributeError):
        return str(exc.reason)
