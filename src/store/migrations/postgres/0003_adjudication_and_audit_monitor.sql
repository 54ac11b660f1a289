-- Consensus that never breaks a tie by class index: a case without a strict
-- majority asks for more labels up to `max_labels`, then waits in status
-- `adjudication` for an adjudicator (`adjudicated_by`).
-- Also: the audit monitor's state, kept with the queue so it survives restarts
-- and is shared by every daemon on it.
ALTER TABLE cases DROP CONSTRAINT cases_status_check;
ALTER TABLE cases ADD CONSTRAINT cases_status_check
    CHECK (status IN ('pending', 'resolved', 'dead_letter', 'adjudication'));
ALTER TABLE cases ADD COLUMN max_labels BIGINT NOT NULL DEFAULT 5;
ALTER TABLE cases ADD COLUMN adjudicated_by TEXT;
CREATE TABLE audit_monitors (
    model TEXT NOT NULL,
    policy_version TEXT NOT NULL,
    state TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (model, policy_version)
);
