"""Mandrill's error answers: the exception endpoints raise and the HTTP statuses it maps to.

Clients classify failures on the error `name` (Invalid_Key, Unknown_Template, ...), so every
endpoint raises `MandrillError` with the name the live service uses; the app turns it into
Mandrill's JSON `{"status": "error", "code", "name", "message"}`.
"""

from __future__ import annotations

from signalmail.sandbox.faults import ERRORS

#: error name -> HTTP status in error_style "spec" (the OpenAPI document's response table)
SPEC_STATUS = {
    "Invalid_Key": 401,
    "PaymentRequired": 402,
    "Unknown_Template": 404,
    "Unknown_Message": 404,
    "Unknown_Subaccount": 404,
    "Invalid_Reject": 404,
    "Unknown_Webhook": 404,
    "Invalid_Template": 422,
    "ValidationError": 422,
    "RequestLimitExceeded": 429,
    "ServiceUnavailable": 503,
    "GeneralError": 500,
}


class MandrillError(Exception):
    """An error answered in Mandrill's JSON shape; `name` is what clients classify on."""

    def __init__(self, name: str, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.name = name
        self.message = message
        self.code = code if code is not None else ERRORS.get(name, (-1, ""))[0]
