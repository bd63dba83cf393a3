"""The error hierarchy: each class carries its HTTP status and OpenAI error type."""

from __future__ import annotations


class TholosError(Exception):
    """Base of every error the server turns into an OpenAI-shaped answer."""

    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.retry_after = retry_after

    def body(self) -> dict[str, object]:
        """The OpenAI error object: {"error": {message, type, param, code}}."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(TholosError):
    """A request the server cannot accept as written (400)."""

    status = 400
    type = "invalid_request_error"


class ContextLengthExceeded(InvalidRequest):
    """The prompt does not fit the model's context window (400).

    `tokens` and `context`, where known, let a dialect word it as its clients expect."""

    code = "context_length_exceeded"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        tokens: int | None = None,
        context: int | None = None,
    ) -> None:
        super().__init__(message, param=param)
        self.tokens = tokens
        self.context = context


class InsufficientMemory(InvalidRequest):
    """The weights plus this request's KV cache would not fit the memory limit (400)."""

    code = "insufficient_memory"


class Unsupported(InvalidRequest):
    """A field that would change the answer's shape and that we do not support (400)."""

    code = "unsupported_parameter"


class InvalidApiKey(TholosError):
    """Missing or wrong bearer key (401)."""

    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class ForbiddenHost(TholosError):
    """A Host header that is not this machine's loopback address (403)."""

    status = 403
    type = "invalid_request_error"
    code = "forbidden_host"


class NotFound(TholosError):
    """An unknown path (404)."""

    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    """A model id or tier that is not installed (404)."""

    code = "model_not_found"


class MethodNotAllowed(TholosError):
    """A known path asked with the wrong method (405)."""

    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class PayloadTooLarge(TholosError):
    """A body over the size limit (413)."""

    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RateLimited(TholosError):
    """The queue is full (429)."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class ServiceUnavailable(TholosError):
    """The engine cannot take this request now: queue timeout, no model, shutting down (503)."""

    status = 503
    type = "service_unavailable"
    code = "service_unavailable"


class NoModelLoaded(ServiceUnavailable):
    """Nothing is loaded and the request names no model (503)."""

    code = "model_not_loaded"

    def __init__(self) -> None:
        super().__init__(
            "No model is loaded. Name one of the ids or tiers of GET /v1/models in `model`."
        )


class ServerError(TholosError):
    """Anything unexpected (500); the message never carries a traceback."""

    status = 500
    type = "server_error"
    code = "internal_error"


class UsageError(Exception):
    """A command-line problem: the CLI prints it as one line and exits with status 2."""
