"""The engine's error hierarchy: each error knows its HTTP status and machine code."""

from typing import Any


class EngineError(Exception):
    """Base of every error the API renders as `{"error", "code", "details"}`."""

    status_code = 500
    code = "INTERNAL_ERROR"

    def __init__(self, message: str, details: list[Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []

    def body(self) -> dict[str, Any]:
        return {"error": self.message, "code": self.code, "details": self.details}


class InvalidOrder(EngineError):
    status_code = 400
    code = "VALIDATION_ERROR"


class InvalidJson(EngineError):
    status_code = 400
    code = "INVALID_JSON"


class Unauthorized(EngineError):
    """No key, a malformed one, or one that is unknown or revoked (never echoed back)."""

    status_code = 401
    code = "UNAUTHORIZED"


class Forbidden(EngineError):
    status_code = 403
    code = "FORBIDDEN"


class RiskLimit(EngineError):
    """A pre-trade risk check refused the order; `details` names the limit and its value."""

    status_code = 403
    code = "RISK_LIMIT"

    def __init__(self, message: str, limit: str, value: object, status_code: int = 403) -> None:
        super().__init__(message, [{"limit": limit, "value": str(value)}])
        self.status_code = status_code
        self.retry_after_s = 1  # sent (Retry-After) with the 429 of the orders-per-second limit


class NotFound(EngineError):
    status_code = 404
    code = "NOT_FOUND"


class Conflict(EngineError):
    status_code = 409
    code = "CONFLICT"


class IdempotencyKeyReused(EngineError):
    status_code = 422
    code = "IDEMPOTENCY_KEY_REUSED"


class NoRoute(EngineError):
    """A well-formed quote request the market cannot serve: the pair does not trade, the
    amount is finer than tokenIn's decimals or too large for it, or no venue can fill it."""

    status_code = 422
    code = "NO_ROUTE"


class IdempotencyInProgress(EngineError):
    status_code = 409
    code = "IDEMPOTENCY_IN_PROGRESS"


class PayloadTooLarge(EngineError):
    status_code = 413
    code = "PAYLOAD_TOO_LARGE"


class UnsupportedMediaType(EngineError):
    status_code = 415
    code = "UNSUPPORTED_MEDIA_TYPE"


class RateLimited(EngineError):
    status_code = 429
    code = "RATE_LIMITED"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ServiceUnavailable(EngineError):
    status_code = 503
    code = "SERVICE_UNAVAILABLE"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class OutcomeUnknown(ServiceUnavailable):
    """The order was sent to PostgreSQL and the answer never came: it may or may not exist.

    It exists only if its commit reached the server before the order's acceptance deadline
    (see migration 004), so once the server answers again the question has one answer for good:
    `GET /api/orders/{orderId}` (404 = it was never created and never will be), or the same
    request again with the same Idempotency-Key (the original response if it was created, a new
    order if it was not).
    """

    code = "ORDER_OUTCOME_UNKNOWN"

    def __init__(self, order_id: str, which: str, retry_after_s: int = 2) -> None:
        super().__init__(
            f"{which} stopped answering while order {order_id} was being stored; whether it "
            f"exists is unknown until {which} is back: look it up with GET /api/orders/{order_id}"
            " or retry with the same Idempotency-Key",
            retry_after_s,
        )
        self.order_id = order_id
        self.details = [{"orderId": order_id, "lookup": f"/api/orders/{order_id}"}]

    def body(self) -> dict[str, Any]:
        return {**super().body(), "orderId": self.order_id}
