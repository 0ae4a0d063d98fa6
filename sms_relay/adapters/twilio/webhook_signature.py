"""Twilio's webhook signature (X-Twilio-Signature), checked by the SDK's own validator."""

from __future__ import annotations

from twilio.request_validator import RequestValidator, get_signature_algorithm


def webhook_signature_valid(
    auth_token: str,
    url: str,
    params: object,
    signature: str,
    signature_settings: str | None = None,
) -> bool:
    """Twilio's X-Twilio-Signature check, by the SDK's own RequestValidator.

    `params` is the form as posted, multi-valued fields included: pass a MultiDict (it
    has `getall`), not a dict of first values. `signature_settings` is the
    X-Twilio-Webhooks-Signature-Settings header, which names the HMAC algorithm.
    """
    if not signature:
        return False
    algorithm = get_signature_algorithm(signature_settings)
    return bool(RequestValidator(auth_token).validate(url, params, signature, algorithm))
