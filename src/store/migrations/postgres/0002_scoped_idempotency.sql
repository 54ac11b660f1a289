-- Idempotency keys are scoped per caller, model and protocol, and remember a
-- hash of the request body (a reuse with another body is refused). The old
-- global table answered one caller's request_id with another caller's response.
DROP TABLE triage_requests;
CREATE TABLE idempotency_keys (
    subject TEXT NOT NULL,
    model TEXT NOT NULL,
    protocol TEXT NOT NULL,
    request_id TEXT NOT NULL,
    body_sha256 TEXT NOT NULL,
    response TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (subject, model, protocol, request_id)
);
