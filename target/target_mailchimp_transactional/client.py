"""Thin Mandrill client over the official mailchimp-transactional 1.4.1 package.

One function per API call, and every failure translated exactly once, here, into the small set
of exception classes the sink reasons about. Classification is by Mandrill's error `name`, not
by HTTP status (older Mandrill answers 500 for everything). The package's quirks (docs/decisions.md)
are absorbed here so that nothing above this module ever sees them:

- a falsy JSON answer (`[]`) or an empty body comes back as a raw `requests.Response` instead
  of data or an exception: for a send that carried recipients this is *not* success;
- `ApiClientError.text` is the decoded JSON dict (or a plain string for non-JSON bodies) and
  `.status_code` the HTTP status;
- the default timeout is 300 s: we always set our own;
- the package mutates the body dict it is given (adds `key` at the top level): we pass a
  shallow copy, so request bodies kept for logs or the dry-run outbox never contain the key.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import mailchimp_transactional
import requests
import urllib3
from mailchimp_transactional.api_client import ApiClientError

LOGGER = logging.getLogger(__name__)

TEMPLATE_ERROR_NAMES = frozenset(
    {"Unknown_Template", "Invalid_Template", "Template_Error", "Unknown_MC_Template"}
)
RETRYABLE_ERROR_NAMES = frozenset(
    {"GeneralError", "ServiceUnavailable", "RequestLimitExceeded", "Too_Many_Requests"}
)
# An answer without Mandrill's error name comes from something in front of it. 429 and 503
# mean nothing was passed on (rate limited, no backend); any other 5xx (a gateway's 502/504,
# a CDN's 520-524) may come after Mandrill got the call, so a send is ambiguous.
NOT_PROCESSED_STATUSES = frozenset({429, 503})


class MandrillError(Exception):
    """Base class: a call to Mandrill did not produce a usable answer."""

    def __init__(self, message: str, name: str = "", status_code: int | None = None) -> None:
        super().__init__(message)
        self.name = name
        self.status_code = status_code


class InvalidKeyError(MandrillError):
    """The API key is wrong or revoked: nothing can succeed, the run must stop."""


class TemplateError(MandrillError):
    """The campaign's template is missing or broken: that campaign fails, the others go on."""


class ValidationFailed(MandrillError):
    """Mandrill refused the request as invalid: the triggers in it are recorded `invalid`."""


class RetryableError(MandrillError):
    """Mandrill certainly did not take the call: safe to retry it as it is.

    GeneralError, ServiceUnavailable, RequestLimitExceeded, an unnamed 429 or 503 from whatever
    is in front of Mandrill, a refused connection or a connect timeout. A retry cannot
    duplicate a message.
    """


class AmbiguousError(MandrillError):
    """The request may or may not have been accepted (read timeout, an unnamed 502/504, ...).

    Not a RetryableError, so that no `except RetryableError` can resend it: retrying blindly
    could send twice. A send's caller looks the triggers up with messages/search and resends
    only those Mandrill does not know; a read may simply be asked again.
    """


class PermanentError(MandrillError):
    """Any other Mandrill error (PaymentRequired, Unknown_Subaccount, ...): fails the call."""


def _never_connected(exc: requests.exceptions.ConnectionError) -> bool:
    """Tell whether the TCP connection was never established (nothing reached Mandrill)."""
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, urllib3.exceptions.NewConnectionError)


def redact(body: dict[str, Any]) -> dict[str, Any]:
    """Return a deep copy of a request body without the API key (for logs and the outbox)."""
    clean = copy.deepcopy(body)
    if "key" in clean:
        clean["key"] = "<redacted>"
    return clean


class MandrillClient:
    """The Mandrill calls the target makes, with errors translated once.

    `base_url` points the official client at any Mandrill-compatible host (the sandbox in
    development and tests); the key never appears in a log line or exception message.
    """

    def __init__(self, api_key: str, base_url: str | None = None, timeout: float = 30.0) -> None:
        self._client = mailchimp_transactional.Client(api_key)
        if base_url:
            self._client.api_client.host = base_url.rstrip("/")
        self._client.api_client.set_timeout(timeout)
        self._api_key = api_key

    @property
    def host(self) -> str:
        """The API root the calls go to (safe to log: the key is in the body, not the URL)."""
        return self._client.api_client.host

    def _call(self, method: Any, body: dict[str, Any], what: str, *, expect_list: bool) -> Any:
        try:
            # The package writes `key` into (and may delete `outputFormat` from) the top-level
            # dict it is given; a shallow copy keeps the caller's body key-free at no cost.
            result = method(dict(body))
        except ApiClientError as exc:
            raise self._translate(exc.text, exc.status_code, what) from None
        except requests.exceptions.ConnectTimeout as exc:
            raise RetryableError(f"{what}: connect timeout ({type(exc).__name__})") from None
        except requests.exceptions.ReadTimeout:
            raise AmbiguousError(f"{what}: no answer within the timeout") from None
        except requests.exceptions.ConnectionError as exc:
            if _never_connected(exc):
                raise RetryableError(f"{what}: connection refused") from None
            # The connection broke after the body may have gone out: Mandrill may have it.
            raise AmbiguousError(f"{what}: connection lost ({type(exc).__name__})") from None
        except (
            requests.exceptions.ChunkedEncodingError,
            requests.exceptions.ContentDecodingError,
        ) as exc:
            # the answer had begun: Mandrill carried the call out
            raise AmbiguousError(f"{what}: answer cut short ({type(exc).__name__})") from None
        except requests.exceptions.RequestException as exc:
            raise RetryableError(f"{what}: {type(exc).__name__}") from None
        if isinstance(result, requests.Response):
            return self._raw_response(result, what, expect_list=expect_list)
        return result

    def _raw_response(self, res: requests.Response, what: str, *, expect_list: bool) -> Any:
        """Interpret the raw Response the package returns for falsy or non-JSON bodies."""
        status = res.status_code
        if status in NOT_PROCESSED_STATUSES:
            raise RetryableError(f"{what}: HTTP {status} with an empty body", status_code=status)
        if status >= 500:
            raise AmbiguousError(f"{what}: HTTP {status} with an empty body", status_code=status)
        if status >= 400:
            raise PermanentError(f"{what}: HTTP {status} with an empty body", status_code=status)
        text = (res.text or "").strip()
        if text == "[]" and expect_list:
            return []
        if text == "[]":
            # A send that carried recipients never legitimately answers an empty list.
            raise AmbiguousError(f"{what}: HTTP {status} with an empty list", status_code=status)
        raise AmbiguousError(f"{what}: HTTP {status} without a JSON answer", status_code=status)

    def _translate(self, text: Any, status: int | None, what: str) -> MandrillError:
        name = ""
        message = ""
        if isinstance(text, dict):
            name = str(text.get("name") or "")
            message = str(text.get("message") or "")
        else:
            message = str(text or "")[:200]
        # Never echo the key even if a server put it into its message.
        if self._api_key:
            message = message.replace(self._api_key, "<redacted>")
        detail = f"{what}: {name or 'HTTP ' + str(status)}: {message}".rstrip(": ")
        if name == "Invalid_Key":
            return InvalidKeyError(
                f"{what}: Mandrill rejected the API key (Invalid_Key). Check the `api_key` "
                "setting (TARGET_MAILCHIMP_TRANSACTIONAL_API_KEY).",
                name,
                status,
            )
        if name in TEMPLATE_ERROR_NAMES or (
            # send-mc-template answers Unknown_Message for an unpublished Mailchimp template.
            name == "Unknown_Message" and what.endswith("send-mc-template")
        ):
            return TemplateError(detail, name, status)
        if name == "ValidationError":
            return ValidationFailed(detail, name, status)
        if name in RETRYABLE_ERROR_NAMES or status == 429:
            return RetryableError(detail, name, status)
        if not name and status in NOT_PROCESSED_STATUSES:
            return RetryableError(detail, name, status)
        if not name and status is not None and status >= 500:
            return AmbiguousError(detail, name, status)
        return PermanentError(detail, name, status)

    def send_template(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """messages/send-template: one result per recipient (email, status, reject_reason, _id)."""
        result = self._call(
            self._client.messages.send_template, body, "messages/send-template", expect_list=False
        )
        return self._results(result, "messages/send-template")

    def send_mc_template(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """messages/send-mc-template: as send_template, for a Mailchimp template id."""
        method = getattr(self._client.messages, "send_mc_template", None)
        if method is None:  # pragma: no cover - present in 1.4.1
            raise PermanentError("this mailchimp-transactional has no send_mc_template")
        result = self._call(method, body, "messages/send-mc-template", expect_list=False)
        return self._results(result, "messages/send-mc-template")

    @staticmethod
    def _results(result: Any, what: str) -> list[dict[str, Any]]:
        if not isinstance(result, list) or not all(isinstance(r, dict) for r in result):
            raise AmbiguousError(f"{what}: unexpected answer of type {type(result).__name__}")
        if not result:
            raise AmbiguousError(f"{what}: empty list for a send with recipients")
        return result

    def search(
        self, query: str, date_from: str | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """messages/search (Lucene query; at most 20 calls a minute on the real service)."""
        body: dict[str, Any] = {"query": query, "limit": limit}
        if date_from:
            body["date_from"] = date_from
        result = self._call(self._client.messages.search, body, "messages/search", expect_list=True)
        if not isinstance(result, list):
            raise AmbiguousError(f"messages/search: unexpected answer {type(result).__name__}")
        return result

    def message_content(self, message_id: str) -> dict[str, Any] | None:
        """messages/content: a sent message as Mandrill rendered it (None: no object came)."""
        result = self._call(
            self._client.messages.content, {"id": message_id}, "messages/content",
            expect_list=False,
        )  # fmt: skip
        return result if isinstance(result, dict) else None

    def metadata_list(self) -> list[dict[str, Any]]:
        """metadata/list: the indexed custom metadata fields."""
        result = self._call(self._client.metadata.list, {}, "metadata/list", expect_list=True)
        return result if isinstance(result, list) else []

    def metadata_add(self, name: str) -> None:
        """metadata/add: index a custom metadata field so messages/search can query it."""
        self._call(self._client.metadata.add, {"name": name}, "metadata/add", expect_list=False)

    def reject_add(self, email: str, comment: str) -> None:
        """rejects/add: Mandrill refuses to send to `email` from now on (reason `custom`)."""
        self._call(
            self._client.rejects.add,
            {"email": email, "comment": comment},
            "rejects/add",
            expect_list=False,
        )

    def ping(self) -> None:
        """users/ping: proves the key before anything is claimed in the ledger."""
        self._call(self._client.users.ping, {}, "users/ping", expect_list=False)
