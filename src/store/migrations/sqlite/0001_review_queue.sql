-- The review queue (DESIGN §5). Timestamps are unix milliseconds; JSON is TEXT.
CREATE TABLE cases (
    id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    model_version TEXT NOT NULL,
    policy_version TEXT NOT NULL,
    request_id TEXT,
    instance_index INTEGER NOT NULL,
    input TEXT NOT NULL,
    feature_names TEXT NOT NULL,
    class_names TEXT NOT NULL,
    model_class INTEGER NOT NULL,
    probabilities TEXT NOT NULL,
    uncertainty TEXT NOT NULL,
    reason TEXT NOT NULL,
    reason_code TEXT NOT NULL,
    audit INTEGER NOT NULL,
    policy_route TEXT,
    reviewers_needed INTEGER NOT NULL,
    escalate_on_disagreement INTEGER NOT NULL,
    escalated INTEGER NOT NULL DEFAULT 0,
    priority REAL NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'resolved', 'dead_letter')),
    lease_failures INTEGER NOT NULL DEFAULT 0,
    consensus INTEGER,
    disagreement REAL,
    created_at INTEGER NOT NULL,
    resolved_at INTEGER
);
CREATE INDEX cases_queue ON cases (status, priority DESC, created_at);
CREATE INDEX cases_model ON cases (model, status);

CREATE TABLE triage_requests (
    request_id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    response TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE leases (
    case_id TEXT NOT NULL REFERENCES cases (id),
    reviewer TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (case_id, reviewer)
);

CREATE TABLE labels (
    case_id TEXT NOT NULL REFERENCES cases (id),
    reviewer TEXT NOT NULL,
    label INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (case_id, reviewer)
);

CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    role TEXT NOT NULL,
    action TEXT NOT NULL,
    case_id TEXT,
    detail TEXT NOT NULL
);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;

CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event TEXT NOT NULL,
    target TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    locked_until INTEGER NOT NULL DEFAULT 0,
    delivered_at INTEGER,
    last_error TEXT
);
CREATE INDEX outbox_due ON outbox (delivered_at, next_attempt_at);
