"""The sidecar's exceptions.

SidecarError
├── ConfigError            a bad flag, variable or config file; the process stops
└── ApiError               a request the sidecar refuses; carries its HTTP status
    ├── BadRequestError        400: malformed JSON or a payload that fails the schema
    ├── UnauthorizedError      401: missing or wrong bearer token
    ├── NotFoundError          404
    ├── PayloadTooLargeError   413
    └── UnsupportedMediaError  415

API errors are turned into ``{"error": message}`` responses in one middleware
(``ai_sidecar.app``).
"""


class SidecarError(Exception):
    """Root of every error the sidecar raises on purpose."""


class ConfigError(SidecarError):
    """The configuration cannot be used; the message says where and why."""


class ApiError(SidecarError):
    http_status = 500


class BadRequestError(ApiError):
    http_status = 400


class UnauthorizedError(ApiError):
    http_status = 401


class NotFoundError(ApiError):
    http_status = 404


class PayloadTooLargeError(ApiError):
    http_status = 413


class UnsupportedMediaError(ApiError):
    http_status = 415
