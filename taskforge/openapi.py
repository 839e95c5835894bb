"""drf-spectacular hook: the error envelope (docs/api.md#errors) on every operation."""

from __future__ import annotations

from typing import Any

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": 'The error envelope: {"error": {"code", "message", "details"}}.',
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string", "example": "validation_error"},
                "message": {"type": "string"},
                "details": {"type": "object", "additionalProperties": {}},
            },
            "required": ["code", "message", "details"],
        }
    },
    "required": ["error"],
}
# status -> (name under components/responses, description)
ERRORS: dict[str, tuple[str, str]] = {
    "400": ("ValidationError", "validation_error: the body, query string or a header is invalid"),
    "401": ("NotAuthenticated", "not_authenticated: missing, unknown or revoked credentials"),
    "402": ("QuotaExceeded", "quota_exceeded: the plan's quota is used up"),
    "403": ("PermissionDenied", "permission_denied: the key's scopes or the user's role forbid it"),
    "404": ("NotFound", "not_found: no such object in this project"),
    "409": ("Conflict", "conflict: the object's state does not allow it"),
    "413": ("PayloadTooLarge", "payload_too_large: the body is too large"),
    "415": ("UnsupportedMediaType", "unsupported_media_type: the body is not application/json"),
    "429": ("RateLimited", "rate_limited: the plan's requests per minute are used up"),
}
METHODS = {"get", "post", "put", "patch", "delete"}


def _statuses(method: str, operation: dict[str, Any]) -> list[str]:
    statuses = ["400", "404", "429"]
    if any(requirement for requirement in operation.get("security", [])):  # {} = anonymous
        statuses += ["401", "403"]
    if method != "get":
        statuses += ["409", "413", "415"]
    if method == "post":
        statuses.append("402")
    return statuses


def add_error_responses(
    result: dict[str, Any], generator: Any, request: Any, public: bool
) -> dict[str, Any]:
    components = result.setdefault("components", {})
    components.setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    responses = components.setdefault("responses", {})
    for name, description in ERRORS.values():
        responses[name] = {
            "description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    responses["RateLimited"]["headers"] = {
        "Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait"}
    }
    for item in result.get("paths", {}).values():
        for method, operation in item.items():
            if method in METHODS:
                documented = operation.setdefault("responses", {})
                for status in _statuses(method, operation):
                    ref = {"$ref": f"#/components/responses/{ERRORS[status][0]}"}
                    documented.setdefault(status, ref)
    return result
