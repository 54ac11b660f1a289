-- Whose leases on a case lapsed (hardening-2, finding 5): a case goes to
-- dead_letter only after the leases of store.max_lease_failures *distinct*
-- reviewers lapsed, so one reviewer who hoards cases and lets them lapse cannot
-- dead-letter the queue alone. cases.lease_failures still counts every lapse.
-- (The audit log's append-only rule needs nothing new here: PostgreSQL has no
-- INSERT OR REPLACE, and ON CONFLICT DO UPDATE is an UPDATE, which its
-- trigger refuses.)
CREATE TABLE lease_lapses (
    case_id TEXT NOT NULL REFERENCES cases (id),
    reviewer TEXT NOT NULL,
    lapses BIGINT NOT NULL,
    last_at BIGINT NOT NULL,
    PRIMARY KEY (case_id, reviewer)
);
