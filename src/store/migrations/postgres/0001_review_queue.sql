-- The review queue (DESIGN §5). Timestamps are unix milliseconds; JSON is TEXT.
-- Integers are BIGINT throughout (the portable driver decodes them as i64).
CREATE TABLE cases (
    id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    model_version TEXT NOT NULL,
    policy_version TEXT NOT NULL,
    request_id TEXT,
    instance_index BIGINT NOT NULL,
    input TEXT NOT NULL,
    feature_names TEXT NOT NULL,
    class_names TEXT NOT NULL,
    model_class BIGINT NOT NULL,
    probabilities TEXT NOT NULL,
    uncertainty TEXT NOT NULL,
    reason TEXT NOT NULL,
    reason_code TEXT NOT NULL,
    audit BIGINT NOT NULL,
    policy_route TEXT,
    reviewers_needed BIGINT NOT NULL,
    escalate_on_disagreement BIGINT NOT NULL,
    escalated BIGINT NOT NULL DEFAULT 0,
    priority DOUBLE PRECISION NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'resolved', 'dead_letter')),
    lease_failures BIGINT NOT NULL DEFAULT 0,
    consensus BIGINT,
    disagreement DOUBLE PRECISION,
    created_at BIGINT NOT NULL,
    resolved_at BIGINT
);
CREATE INDEX cases_queue ON cases (status, priority DESC, created_at);
CREATE INDEX cases_model ON cases (model, status);

CREATE TABLE triage_requests (
    request_id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    response TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE leases (
    case_id TEXT NOT NULL REFERENCES cases (id),
    reviewer TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (case_id, reviewer)
);

CREATE TABLE labels (
    case_id TEXT NOT NULL REFERENCES cases (id),
    reviewer TEXT NOT NULL,
    label BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (case_id, reviewer)
);

CREATE TABLE audit_log (
    id BIGSERIAL PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    role TEXT NOT NULL,
    action TEXT NOT NULL,
    case_id TEXT,
    detail TEXT NOT NULL
);
CREATE FUNCTION audit_log_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

CREATE TABLE outbox (
    id BIGSERIAL PRIMARY KEY,
    event TEXT NOT NULL,
    target TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    locked_until BIGINT NOT NULL DEFAULT 0,
    delivered_at BIGINT,
    last_error TEXT
);
CREATE INDEX outbox_due ON outbox (delivered_at, next_attempt_at);
