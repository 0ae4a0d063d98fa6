"""Twilio's webhook signature (X-Twilio-Signature), checked by the SDK's own validator."""

from __future__ import annotations

import hmac
from functools import lru_cache

from twilio.request_validator import RequestValidator, get_signature_algorithm


@lru_cache(maxsize=4)
def _validator(auth_token: str) -> RequestValidator:
    return RequestValidator(auth_token)


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
    validator = _validator(auth_token)
    # The URL as Twilio called it matches at once; `validate` computes the HMAC twice (the
    # URL with and without its port), so it only decides the rest.
    try:
        computed = validator.compute_signature(url, params, algorithm)
    except ValueError:  # an algorithm the SDK does not know: `validate` refuses it
        computed = ""
    if computed and hmac.compare_digest(computed.encode(), signature.encode()):
        return True
    return bool(validator.validate(url, params, signature, algorithm))
