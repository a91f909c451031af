"""The one exception tree of fog-appliance.

Everything the service raises on purpose is a :class:`FogError`. Third-party errors
(sqlite3, aiomqtt, aiocoap, OS errors) are translated into this tree at the edge of the
module that talks to them (``store/``, ``intake/``, ``broker/``), so callers only ever
catch these::

    FogError
     ├── ConfigError            a configuration file or flag is wrong (names file and field)
     ├── RejectedError          an input from an edge was refused; carries a Reason
     │    ├── ProtocolError     the bytes are malformed (truncated, too large, bad shape, NaN …)
     │    ├── AuthError         unknown or revoked device, bad HMAC tag
     │    └── PolicyError       well-formed and authentic, but not acceptable now
     │                          (replayed sequence, wrong round or model version, round closed)
     ├── StoreError             the SQLite store failed (disk full, locked, corrupt)
     │    ├── RecordNotFound    no such row (a model version, a device) was asked for
     │    └── RecordConflict    the row is in a state that refuses the change
     ├── BrokerError            the MQTT broker is unreachable or refused us
     ├── ProvisioningError      a device id is invalid, unknown, or already registered
     ├── ServiceError           a part of the running node failed to start or stopped
     ├── ActionError            an admin action was refused (bad value, wrong state, not built)
     ├── ReleaseWithheld        the privacy proxy kept an aggregate on the node (k-minimum,
     │                          privacy budget); the round closes without a model
     ├── ModelNotFoundError     the model cache has no such version (never published, or
     │                          its blob was dropped to keep the disk budget)
     ├── CacheError             a prefetch failed (fetch error, wrong sha256, time-out);
     │                          nothing was cached, edges keep the current model
     ├── InferenceError         a model could not be exported to ONNX or loaded into
     │                          onnxruntime; the previously loaded model keeps serving
     ├── OverloadedError        the node is over its CPU, memory or disk caps; carries when
     │                          to retry (``retry_after_s``)
     ├── CloudError             the cloud link failed or the cloud sent something unusable
     ├── PeerError              a peer fog node is unreachable or answered something unusable
     ├── ClientError            (edge side, fog_appliance/client/) the fog node could not be
     │                          reached or answered something unusable; the update is kept
     ├── ModelRefused           a model (own aggregate, peer's, cloud's, rollback) is not
     │                          finite, too large or too far; the current model stays
     └── UpdateError            an appliance update was refused or failed (bad signature,
                                download, RAUC); the booted slot is unchanged

Messages say what happens next ("… the update was rejected; the round continues").
"""

from __future__ import annotations

import enum


class Reason(enum.StrEnum):
    """Why an update (or hello, or request) from an edge was rejected.

    The value is the stable, machine-readable code sent back to the edge (CoAP diagnostic
    payload, MQTT ``down`` message) and used as the label of the rejection counters.
    """

    TRUNCATED = "truncated"
    TOO_LARGE = "too_large"
    BAD_MAGIC = "bad_magic"
    BAD_VERSION = "bad_version"
    BAD_HEADER = "bad_header"
    BAD_DTYPE = "bad_dtype"
    BAD_SHAPE = "bad_shape"
    NON_FINITE = "non_finite"
    ZERO_SAMPLES = "zero_samples"
    TOO_MANY_SAMPLES = "too_many_samples"
    VALUE_TOO_LARGE = "value_too_large"
    BAD_LOCAL_STEPS = "bad_local_steps"
    BAD_MESSAGE = "bad_message"
    UNKNOWN_DEVICE = "unknown_device"
    REVOKED_DEVICE = "revoked_device"
    DEVICE_MISMATCH = "device_mismatch"
    BAD_SIGNATURE = "bad_signature"
    REPLAYED_SEQUENCE = "replayed_sequence"
    REPLAYED_HELLO = "replayed_hello"
    WRONG_MODEL_VERSION = "wrong_model_version"
    WRONG_ROUND = "wrong_round"
    ROUND_CLOSED = "round_closed"
    ALREADY_CONTRIBUTED = "already_contributed"
    OVERLOADED = "overloaded"


class FogError(Exception):
    """Base of every error fog-appliance raises on purpose."""


class ConfigError(FogError):
    """A configuration value is wrong. ``str()`` names the file, the field and the problem."""

    def __init__(self, source: str, field: str, problem: str) -> None:
        self.source = source
        self.field = field
        self.problem = problem
        where = f"{source}: {field}" if field else source
        super().__init__(f"{where}: {problem}")


class RejectedError(FogError):
    """An input from an edge was refused. Nothing already accepted is affected."""

    def __init__(self, reason: Reason, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        self.seq: int | None = None
        """The frame's sequence number, when the header could be read (set by the intake)."""
        self.last_hello: int | None = None
        """For ``replayed_hello``: the device's last accepted hello counter."""
        self.hello_ctr: int | None = None
        """For ``replayed_hello``: the refused hello's own counter."""
        super().__init__(f"{reason.value}: {detail}")

    @property
    def diagnostic(self) -> str:
        """One line for the edge: the reason code, the detail, and what happens next."""
        return f"{self.reason.value}: {self.detail}; the update was rejected, the round continues"

    @property
    def hello_diagnostic(self) -> str:
        """The same for a refused hello (nothing about the device was recorded)."""
        return f"{self.reason.value}: {self.detail}; the hello was refused, nothing changed"


class ProtocolError(RejectedError):
    """The bytes do not follow docs/protocol.md."""


class AuthError(RejectedError):
    """The sender is unknown, revoked, or the HMAC tag does not verify."""


class PolicyError(RejectedError):
    """The update is authentic but not acceptable in the current round."""


class StoreError(FogError):
    """The SQLite store failed; the operation was not committed."""


class RecordNotFound(StoreError):
    """The store has no such row; nothing was changed. The admin API answers 404."""


class RecordConflict(StoreError):
    """The row is in a state that refuses the change (e.g. evicting the model edges train
    now); nothing was changed. The admin API answers 409."""


class BrokerError(FogError):
    """The MQTT broker could not be reached or refused the connection."""


class ProvisioningError(FogError):
    """A device could not be provisioned, listed or revoked as asked."""


class ServiceError(FogError):
    """A part of the running fog node failed to start or stopped unexpectedly."""


class ActionError(FogError):
    """An admin action (console, admin API) was refused; nothing was changed.

    ``status`` is the HTTP status the admin API answers with (400 bad value, 404 unknown
    thing, 409 wrong state, 501 not in this build)."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)
class ReleaseWithheld(FogError):
    """The privacy proxy refused to let a round's aggregate leave the node (too few
    distinct devices, or the privacy budget would be exceeded). The round closes as failed
    with this message as its note; the current model stays."""


class ModelNotFoundError(FogError):
    """The model cache has no blob for the asked version."""

    def __init__(self, version: int, detail: str) -> None:
        self.version = version
        super().__init__(f"model {version}: {detail}")


class CacheError(FogError):
    """A model could not be fetched into the cache; nothing was cached."""


class InferenceError(FogError):
    """A model could not be exported or loaded for inference; the previous one serves on."""


class OverloadedError(FogError):
    """The node is over a resource cap. ``retry_after_s`` says when to ask again."""

    def __init__(self, detail: str, retry_after_s: int) -> None:
        self.detail = detail
        self.retry_after_s = retry_after_s
        super().__init__(f"overloaded: {detail}; retry in {retry_after_s} s")


class CloudError(FogError):
    """The cloud tier (Flower) failed or sent something unusable; edges are not affected,
    the fog keeps running rounds standalone."""


class PeerError(FogError):
    """A peer fog node is unreachable or answered something unusable; this node carries on
    without it."""


class ClientError(FogError):
    """Raised to an edge by :class:`fog_appliance.client.FLClient`: the fog node could not
    be reached, did not answer in time, or answered something unusable. An update not
    answered stays in ``FLClient.unconfirmed`` (MQTT resends it after a reconnect)."""


class ModelRefused(FogError):
    """A model was not published or adopted: it is not finite, its norm is above
    ``model.max_norm``, or (a peer's) it is too far from this node's. ``reason`` is a
    stable code (``non_finite``, ``norm``, ``distance``, ``shape``); the current model
    stays and keeps serving."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


class UpdateError(FogError):
    """An appliance update (A/B root slots, RAUC) could not be installed, or its state
    could not be read: a bundle that is not signed by a trusted key, a download that
    failed, RAUC missing. The booted slot and the data are unchanged."""
