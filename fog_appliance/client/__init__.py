"""The edge client: the public API for Raspberry Pi- and phone-class edges.

Connect to a fog node with the config JSON that ``fog-appliance provision`` wrote, fetch
the current model, send signed updates, learn whether each was accepted::

    creds = DeviceCredentials.load("dev1.json")
    async with FLClient(creds, transport="mqtt", state_path="dev1.state") as client:
        model = await client.model()
        delta = train(model.weights)                      # your local training
        result = await client.send_update(delta, num_samples=n, local_steps=steps,
                                          model=model)

Sequence numbers are persisted in ``state_path`` (write-ahead, fsynced and renamed into
place), so a restarted device never reuses one. Resending the same update (same seq, same
bytes) is idempotent.

Delivery is end to end: a broker's PUBACK is hop-by-hop (Mosquitto persists by periodic
snapshot), so it does not mean the fog committed the update. The client keeps every update
until the fog's ``accepted`` (or a rejection) arrives on ``fog/F/down/D``: the MQTT connection
reconnects with back-off by itself and resends what is unconfirmed, and ``send_frame``
resends after each ``timeout`` without an answer (``attempts`` times). An update still
unconfirmed is listed in :attr:`FLClient.unconfirmed`.

A fog node that has no room for another edge answers a hello with a ``redirect`` to a
neighbouring fog node; ``await client.hello(wait=True)`` follows it (reconnects there, with
the same credentials, which the fog handed over) and returns the final welcome.

Everything the fog sends this device is authenticated (docs/protocol.md "Signed down
messages"): down messages carry an HMAC tag with the device key and are dropped (counted in
:attr:`FLClient.dropped`, logged) without it; a welcome or redirect is taken only as the
answer to the hello whose counter it echoes; the broadcast announcement is used only if its
SHA-256 is the one the latest welcome names (the client says hello again to learn it when a
new one arrives), and a model blob only if its SHA-256 is the announcement's.

The package imports none of the node's heavy dependencies (onnxruntime, scipy, psutil,
sqlite-utils, dp-accounting, flwr, textual): an edge needs numpy, aiocoap and, for MQTT,
aiomqtt. Layout::

    types.py      DeviceCredentials, GlobalModel, SendResult (data, no I/O)
    state.py      SeqState: the sequence counter, written atomically with fsync
    transport.py  Transport (the port FLClient talks to) and Verifier (signed down messages)
    coap.py       CoapLink (the one CoAP request path, with a timeout), CoapTransport
    mqtt.py       MqttTransport (persistent session, reconnect, resend); imported on demand
    flclient.py   FLClient: hello, redirects, model authentication, retries, inference
"""

from fog_appliance.errors import ClientError, Reason

from .flclient import FLClient
from .types import (
    TRANSPORTS,
    DeviceCredentials,
    GlobalModel,
    SendResult,
    TransportName,
    transport_name,
)

__all__ = ["TRANSPORTS", "ClientError", "DeviceCredentials", "FLClient", "GlobalModel",
           "Reason", "SendResult", "TransportName", "transport_name"]
