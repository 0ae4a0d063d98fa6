"""The ledger's statements: claim, mark sending, renew, settle, mark reported."""

from __future__ import annotations

from sqlalchemy import text

from sms_relay.adapters.postgres.status_history import RECORD_SETTLED_STEPS
from sms_relay.domain.states import (
    CONSUMER_SETTLED,
    RESUMABLE,
    DeliveryState,
)

S = DeliveryState
# The states the statements name, bound as parameters: the enum is their one spelling.
STATES = {
    "claimed": S.CLAIMED.value,
    "sending": S.SENDING.value,
    "retry_scheduled": S.RETRY_SCHEDULED.value,
    "resumable": sorted(RESUMABLE),
    "settled": sorted(CONSUMER_SETTLED),
}
# `sms-relay forget` writes this over a settled row's phone columns (NOT NULL): the row
# stays as a tombstone that dedupes its eventId, and no claim ever takes it again.
ERASED = "erased"

CLAIM = text(
    """
WITH input AS (
    SELECT * FROM unnest(
        CAST(:ids AS text[]), CAST(:types AS text[]), CAST(:hashes AS text[]),
        CAST(:masked AS text[]), CAST(:consents AS timestamptz[]), CAST(:purposes AS text[]),
        CAST(:sources AS text[]), CAST(:cancel_keys AS text[]), CAST(:send_hashes AS text[])
    ) AS t(event_id, event_type, phone_hash, phone_masked, consent_at, consent_purpose,
        consent_source, cancel_key, send_hash)
),
-- A first claim that nothing stops is marked `sending` in this statement (the hot path's
-- one round trip); the same checks are in the final SELECT, in the same snapshot.
fresh AS (
    SELECT input.*, (send_hash IS NOT NULL
        AND NOT EXISTS (SELECT 1 FROM suppressions s WHERE s.phone_hash = input.phone_hash)
        AND NOT EXISTS (SELECT 1 FROM appointment_cancellations c
                        WHERE c.cancel_key = input.cancel_key)) AS sends
    FROM input
),
before AS (
    SELECT d.* FROM deliveries d JOIN input USING (event_id)
),
claimed AS (
    INSERT INTO deliveries AS d (event_id, event_type, state, phone_hash, phone_masked,
        consent_at, consent_purpose, consent_source, lease_owner, lease_token, lease_until,
        sending_started_at, sent_body_hashes)
    SELECT event_id, event_type,
        CASE WHEN sends THEN CAST(:sending AS text) ELSE CAST(:claimed AS text) END,
        phone_hash, phone_masked, consent_at,
        consent_purpose, consent_source, :owner, nextval('delivery_lease_token_seq'),
        clock_timestamp() + make_interval(secs => :lease),
        CASE WHEN sends THEN clock_timestamp() END,
        CASE WHEN sends THEN ARRAY[send_hash] ELSE CAST('{}' AS text[]) END
    FROM fresh
    ON CONFLICT (event_id) DO UPDATE SET
        lease_owner = excluded.lease_owner, lease_token = excluded.lease_token,
        lease_until = excluded.lease_until, updated_at = now(),
        -- Taking over a send that never settled: it may have created a message, at the
        -- latest while its lease ran (every Twilio call checks the lease first). So the
        -- doubt counts from the lease's end, even when an older doubt was already set
        -- (the holder may have been resending after it). GREATEST ignores a NULL.
        doubt_since = CASE WHEN d.state = :sending
            THEN GREATEST(d.doubt_since, LEAST(d.lease_until, clock_timestamp()))
            ELSE d.doubt_since END,
        -- The doubt is recorded: the new holder marks `sending` again only right before
        -- it creates, so its death while it only reconciles moves the doubt no further.
        state = CASE WHEN d.state = :sending THEN CAST(:retry_scheduled AS text)
            ELSE d.state END
    WHERE d.state = ANY(CAST(:resumable AS text[])) AND d.phone_hash <> :erased
        AND (d.lease_until IS NULL OR d.lease_until <= clock_timestamp()
             -- our own claim from a batch that failed and was rewound (the service never
             -- re-claims an event whose send still runs in this process)
             OR d.lease_owner = excluded.lease_owner)
    -- An update never leaves a row `sending`: `sending` here means marked by this claim.
    RETURNING d.event_id, d.lease_token, d.doubt_since, d.state = :sending AS marked,
        d.sending_started_at AS started
)
SELECT input.event_id, claimed.lease_token, claimed.doubt_since,
    COALESCE(claimed.marked, false) AS marked, claimed.started, before.state,
    before.attempts, before.sending_started_at, before.message_sid, before.error_code,
    before.settled_state, before.reported, before.sent_body_hashes,
    GREATEST(EXTRACT(EPOCH FROM before.lease_until - clock_timestamp()), 0) AS busy_for,
    EXISTS (SELECT 1 FROM suppressions s WHERE s.phone_hash = input.phone_hash) AS suppressed,
    COALESCE(before.phone_hash = :erased, false) AS erased,
    EXISTS (SELECT 1 FROM appointment_cancellations c WHERE c.cancel_key = input.cancel_key)
        AS canceled
FROM input
LEFT JOIN claimed USING (event_id)
LEFT JOIN before USING (event_id)
"""
)

MARK_SENDING = text(
    """
UPDATE deliveries d SET state = CAST(:sending AS text),
    sent_body_hashes = CASE WHEN v.body_hash = ANY(d.sent_body_hashes) THEN d.sent_body_hashes
                       ELSE array_append(d.sent_body_hashes, v.body_hash) END,
    sending_started_at = COALESCE(d.sending_started_at, clock_timestamp()), updated_at = now()
FROM unnest(CAST(:ids AS text[]), CAST(:tokens AS bigint[]), CAST(:hashes AS text[]))
    AS v(event_id, token, body_hash)
WHERE d.event_id = v.event_id AND d.lease_token = v.token
RETURNING d.event_id, d.sending_started_at
"""
)

# Only a live lease is extended. A settle releases the lease but keeps its token, and a
# heartbeat sent just before it (or blocked on its row lock) must not hand the released
# row a fresh lease: the next claimer would wait that whole lease out as `busy`.
RENEW = text(
    """
UPDATE deliveries d SET lease_until = clock_timestamp() + make_interval(secs => :lease)
FROM unnest(CAST(:ids AS text[]), CAST(:tokens AS bigint[])) AS v(event_id, token)
WHERE d.event_id = v.event_id AND d.lease_token = v.token
    AND d.lease_until > clock_timestamp()
RETURNING d.event_id
"""
)

SETTLE = text(
    f"""
WITH v AS (
    SELECT * FROM unnest(
        CAST(:ids AS text[]), CAST(:tokens AS bigint[]), CAST(:states AS text[]),
        CAST(:attempts AS int[]), CAST(:sids AS text[]), CAST(:codes AS int[]),
        CAST(:errors AS text[]), CAST(:doubts AS timestamptz[]), CAST(:segments AS int[]),
        CAST(:encodings AS text[])
    ) AS t(event_id, token, state, attempt, sid, code, error, doubt, segments, encoding)
),
held AS (
    SELECT v.*, (v.sid IS NOT NULL AND EXISTS (
        SELECT 1 FROM deliveries o WHERE o.message_sid = v.sid AND o.event_id <> v.event_id
    )) AS sid_taken
    FROM v JOIN deliveries d ON d.event_id = v.event_id AND d.lease_token = v.token
),
settled AS (
    UPDATE deliveries d SET state = h.state, attempts = h.attempt,
        message_sid = COALESCE(h.sid, d.message_sid), error_code = h.code,
        last_error = h.error, doubt_since = h.doubt, updated_at = now(),
        segments = COALESCE(h.segments, d.segments), encoding = COALESCE(h.encoding, d.encoding),
        settled_state = CASE WHEN h.state = ANY(CAST(:settled AS text[])) THEN h.state
                        ELSE d.settled_state END,
        reported = CASE WHEN h.state = ANY(CAST(:settled AS text[])) THEN false
                   ELSE d.reported END,
        -- settled or scheduled: the event is handed on at once (a retry topic decides when)
        lease_until = clock_timestamp()
    FROM held h WHERE d.event_id = h.event_id AND NOT h.sid_taken
    RETURNING d.event_id, d.state, d.message_sid, d.error_code, h.attempt
),
history AS ({RECORD_SETTLED_STEPS})
SELECT event_id, false AS sid_taken FROM settled
UNION ALL
SELECT event_id, true FROM held WHERE sid_taken
"""  # noqa: S608 (the fragment is our own constant, no input)
)

MARK_REPORTED = text(
    """
UPDATE deliveries d SET reported = true
FROM unnest(CAST(:ids AS text[]), CAST(:states AS text[])) AS v(event_id, state)
WHERE d.event_id = v.event_id AND d.settled_state = v.state
"""
)
