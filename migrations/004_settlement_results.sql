-- depends: 003_settlement
-- Settlement results that do not repeat their ledger line, and indexes for the reads settlement
-- makes (the throughput of `make bench settlement`: posting 1,000,000 lines).

-- A cause settled to a line keeps its inputs in that line's cause (ledger_lines.cause, which is
-- append-only): storing them twice doubled the size of settlement_results and the time to write
-- it. Readers take coalesce(r.detail, l.cause) with l the result's line. A result without a line
-- (waiting, not settleable, capped to nothing, withdrawn) keeps its inputs here: never neither.
ALTER TABLE settlement_results ALTER COLUMN detail DROP NOT NULL, ALTER COLUMN detail DROP DEFAULT;
ALTER TABLE settlement_results ADD CONSTRAINT settlement_results_inputs_kept
    CHECK (detail IS NOT NULL OR line_id IS NOT NULL);

-- Results are read per account only for capacity credits (closes, enrollment changes): energy
-- results, nearly all of them, need not be in that index.
DROP INDEX settlement_results_account;
CREATE INDEX settlement_results_capacity ON settlement_results (service_account_id, program_id)
    WHERE credit_type = 'CAPACITY';

-- Performances waiting for their account or event are looked for every second (and counted for
-- a gauge): without this index, each look read the whole table.
CREATE INDEX settlement_results_waiting ON settlement_results (updated_at) WHERE status = 'WAITING';
