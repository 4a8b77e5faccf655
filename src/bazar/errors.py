"""The error taxonomy: every error the world can cause, with its HTTP status and code.

Each class says whether it is *definite* (the operation certainly did not happen) or
*indefinite* (it may have happened: a timeout or lost connection after a write was sent).
Never report definite when in doubt. Bugs are assertions, not BazarErrors.
"""

from __future__ import annotations


class BazarError(Exception):
    status: int = 500
    code: str = "internal"
    definite: bool = True
    retry_after_s: int | None = None

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = dict(headers or {})


class InvalidRequest(BazarError):
    status = 422
    code = "invalid_request"


class IdempotencyKeyReused(BazarError):
    status = 422
    code = "idempotency_key_reused"


class IdempotencyKeyInUse(BazarError):
    status = 409
    code = "idempotency_key_in_use"
    retry_after_s = 1


class NotFound(BazarError):
    status = 404
    code = "not_found"


class OutOfStock(BazarError):
    status = 409
    code = "out_of_stock"


class Unauthorized(BazarError):
    status = 401
    code = "unauthorized"


class MethodNotAllowed(BazarError):
    status = 405
    code = "method_not_allowed"


class PayloadTooLarge(BazarError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(BazarError):
    status = 415
    code = "unsupported_media_type"


class Unavailable(BazarError):
    """No replica can do it now; the outcome of a write may be unknown (indefinite)."""

    status = 503
    code = "unavailable"
    definite = False
    retry_after_s = 1


class Refused(BazarError):
    """A replica refused a write before queueing it (a backup unreachable): definitely not
    done. Internal between tiers; the front end answers it as 503 `unavailable`."""

    status = 503
    code = "refused"
    definite = True
    retry_after_s = 1


class Abandoned(BazarError):
    """A primary rolled back the batch that held this write (deposed, or a view change
    while it waited): its outcome is unknown (it may be staged on a backup and committed by
    a new primary), so a write under an idempotency key is retried with the same key.
    Internal between tiers; the front end answers it as 503 `unavailable`."""

    status = 503
    code = "abandoned"
    definite = False
    retry_after_s = 1


class LastReplica(BazarError):
    """Removing it would leave its service without an in-sync replica."""

    status = 409
    code = "last_replica"


class TooManyReplicas(BazarError):
    """Adding it would give its service more than `limits.replicas_max` replicas."""

    status = 409
    code = "too_many_replicas"


class NotRunning(BazarError):
    """A process to pause or resume (teaching console) is not running."""

    status = 409
    code = "not_running"


class NotInSync(BazarError):
    """A switchover target that is not an in-sync backup."""

    status = 409
    code = "not_in_sync"


class StaleEpoch(BazarError):
    """A replica refused a message from an older view (fencing)."""

    status = 409
    code = "stale_epoch"


class NotPrimary(BazarError):
    """A write reached a replica that is not the primary of the current view."""

    status = 421
    code = "not_primary"


ERRORS_BY_CODE: dict[str, type[BazarError]] = {
    cls.code: cls
    for cls in (
        InvalidRequest,
        IdempotencyKeyReused,
        IdempotencyKeyInUse,
        NotFound,
        OutOfStock,
        Unauthorized,
        MethodNotAllowed,
        PayloadTooLarge,
        UnsupportedMediaType,
        Unavailable,
        Refused,
        Abandoned,
        StaleEpoch,
        NotPrimary,
    )
}
