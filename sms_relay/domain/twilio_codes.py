"""Twilio's error codes on a create, in one table: whose fault, and so what to do.

Checked against Twilio's error reference (twilio.com/docs/api/errors/<code>). Only the
recipient's own codes are final (`failed`): resending to that number cannot help. A code
that says our account, sender or settings are wrong is transient instead (retry tiers,
then the DLQ, where `dlq replay` brings it back once the console is fixed), and an alert
fires at once: otherwise one console mistake would silently drop every SMS. A 4xx code
not in the table counts as ours too, for the same reason.
"""

from __future__ import annotations

from enum import StrEnum


class Fault(StrEnum):
    RECIPIENT = "recipient"  # final: the number cannot get this SMS
    ACCOUNT = "account"  # ours: credentials, sender, account settings, request shape


# "Attempt to send to unsubscribed recipient": the number sent STOP; suppress it.
OPT_OUT_ERROR = 21610

RECIPIENT_CODES: dict[int, str] = {
    21211: "Invalid 'To' Phone Number",
    21214: "'To' phone number cannot be reached",
    21217: "Phone number does not appear to be valid",
    21265: "'To' number cannot be a Short Code",
    21266: "'To' and 'From' numbers cannot be the same",
    21407: "This phone number type does not support SMS or MMS",
    21421: "PhoneNumber is invalid",
    21610: "Attempt to send to unsubscribed recipient",
    21612: "The 'To' phone number is not currently reachable via SMS",
    21614: "'To' number is not a valid mobile number",
    21635: "'To' number cannot be a landline",
}

# Codes known to be ours, for the reader of an alert: `fault_of` needs no list of them,
# since every code not the recipient's counts as ours.
ACCOUNT_CODES: dict[int, str] = {
    20003: "Authentication Error (bad or rotated credentials)",
    20005: "Account not active",
    20008: "Resource not accessible with Test Account Credentials",
    20404: "The requested resource was not found (wrong account or URL)",
    21212: "Invalid 'From' Phone Number",
    21408: "Permission to send an SMS has not been enabled for the region (geo permissions)",
    21601: "Phone number is not a valid SMS-capable inbound phone number",
    21602: "Message body is required",
    21603: "'From' phone number is required",
    21606: "The 'From' phone number is not a valid message-capable Twilio phone number",
    21608: "The 'To' phone number is not yet verified for this account (trial)",
    21609: "Invalid StatusCallback",
    21611: "This 'From' number has exceeded the maximum number of queued messages",
    21617: "The concatenated message body exceeds the 1600 character limit",
    21659: "'From' is not a Twilio phone number or Short Code country mismatch",
    21660: "Mismatch between the 'From' number and the account",
    21703: "The Messaging Service does not have a phone number available to send a message",
    21704: "The Messaging Service contains no phone numbers",
    21705: "The Messaging Service is invalid",
}


def fault_of(status: int, code: int | None) -> Fault:
    """Whose fault a 4xx answer (other than 429) to a create is."""
    if status in (401, 403):
        return Fault.ACCOUNT
    if code in RECIPIENT_CODES:
        return Fault.RECIPIENT
    return Fault.ACCOUNT
