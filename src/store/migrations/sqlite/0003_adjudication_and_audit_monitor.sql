-- Consensus that never breaks a tie by class index: a case without a strict
-- majority asks for more labels up to `max_labels`, then waits in status
-- `adjudication` for an adjudicator (`adjudicated_by`). SQLite cannot alter a
-- CHECK constraint, so `cases` is rebuilt. The migration runs inside a
-- transaction with foreign keys enforced, so the tables that reference `cases`
-- (leases, labels) are rebuilt with it: children are dropped before their
-- parent, and renaming `cases_new` rewrites the new children's references.
-- Also: the audit monitor's state, kept with the queue so it survives restarts.
CREATE TABLE cases_new (
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
    status TEXT NOT NULL CHECK (status IN ('pending', 'resolved', 'dead_letter', 'adjudication')),
    lease_failures INTEGER NOT NULL DEFAULT 0,
    consensus INTEGER,
    disagreement REAL,
    created_at INTEGER NOT NULL,
    resolved_at INTEGER,
    max_labels INTEGER NOT NULL DEFAULT 5,
    adjudicated_by TEXT
);
INSERT INTO cases_new (id, model, model_version, policy_version, request_id, instance_index, input, feature_names, class_names, model_class, probabilities, uncertainty, reason, reason_code, audit, policy_route, reviewers_needed, escalate_on_disagreement, escalated, priority, status, lease_failures, consensus, disagreement, created_at, resolved_at) SELECT id, model, model_version, policy_version, request_id, instance_index, input, feature_names, class_names, model_class, probabilities, uncertainty, reason, reason_code, audit, policy_route, reviewers_needed, escalate_on_disagreement, escalated, priority, status, lease_failures, consensus, disagreement, created_at, resolved_at FROM cases;
CREATE TABLE leases_new (
    case_id TEXT NOT NULL REFERENCES cases_new (id),
    reviewer TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (case_id, reviewer)
);
INSERT INTO leases_new (case_id, reviewer, expires_at, created_at)
    SELECT case_id, reviewer, expires_at, created_at FROM leases;
CREATE TABLE labels_new (
    case_id TEXT NOT NULL REFERENCES cases_new (id),
    reviewer TEXT NOT NULL,
    label INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (case_id, reviewer)
);
INSERT INTO labels_new (case_id, reviewer, label, created_at)
    SELECT case_id, reviewer, label, created_at FROM labels;
DROP TABLE labels;
DROP TABLE leases;
DROP TABLE cases;
ALTER TABLE cases_new RENAME TO cases;
ALTER TABLE leases_new RENAME TO leases;
ALTER TABLE labels_new RENAME TO labels;
CREATE INDEX cases_queue ON cases (status, priority DESC, created_at);
CREATE INDEX cases_model ON cases (model, status);
CREATE TABLE audit_monitors (
    model TEXT NOT NULL,
    policy_version TEXT NOT NULL,
    state TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (model, policy_version)
);
