-- The FHIR outbox (docs/fhir.md): one row per published case, upserted in the
-- same transaction as every change of the case (created, claimed, released,
-- labeled, lease expired, dead-lettered, adjudicated). `generation` counts the
-- changes and `delivered_generation` the last one the FHIR server has seen, so
-- the publisher writes the whole Task as the case is *now* and a change made
-- while it writes is never lost. `due_at` is NULL when the Task is in step (or
-- the row is parked). No foreign key to cases: a later rebuild of `cases` (as
-- 0003 did on SQLite) must not have to know about this table.
CREATE TABLE fhir_outbox (
    case_id TEXT PRIMARY KEY,
    generation INTEGER NOT NULL,
    delivered_generation INTEGER NOT NULL DEFAULT 0,
    changed_at INTEGER NOT NULL,
    pending_since INTEGER,
    due_at INTEGER,
    locked_until INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    refusals INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    parked_at INTEGER,
    task_id TEXT,
    task_version TEXT
);
CREATE INDEX fhir_outbox_due ON fhir_outbox (due_at);
CREATE INDEX fhir_outbox_parked ON fhir_outbox (parked_at);
-- The patient's identifier a caller may send with an instance, kept only for
-- the Task's `for` (never shown through the review API).
ALTER TABLE cases ADD COLUMN patient TEXT;
