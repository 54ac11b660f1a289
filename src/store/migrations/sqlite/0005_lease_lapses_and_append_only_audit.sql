-- Whose leases on a case lapsed (hardening-2, finding 5): a case goes to
-- dead_letter only after the leases of store.max_lease_failures *distinct*
-- reviewers lapsed, so one reviewer who hoards cases and lets them lapse cannot
-- dead-letter the queue alone. cases.lease_failures still counts every lapse.
CREATE TABLE lease_lapses (
    case_id TEXT NOT NULL REFERENCES cases (id),
    reviewer TEXT NOT NULL,
    lapses INTEGER NOT NULL,
    last_at INTEGER NOT NULL,
    PRIMARY KEY (case_id, reviewer)
);

-- INSERT OR REPLACE deletes the row it replaces without firing the delete
-- trigger (recursive_triggers is off), so the audit log could be rewritten
-- (finding 9): an insert that names an existing id is refused outright.
CREATE TRIGGER audit_log_no_replace BEFORE INSERT ON audit_log
WHEN NEW.id IS NOT NULL AND EXISTS (SELECT 1 FROM audit_log WHERE id = NEW.id)
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
