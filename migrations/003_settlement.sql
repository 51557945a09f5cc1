-- depends: 002_dispatch
-- Settlement: the billing ledger (double-entry, append-only), what settlement knows of each
-- account, the result each cause (event, bill period, bonus) last settled to, and the Kafka
-- positions consumed, stored in the same transaction as the lines they produced.

-- Operators' API credentials (providers' are in provider_credentials): an operator reads every
-- account. Only a token's SHA-256 is stored; the token itself is shown once, when minted.
CREATE TABLE operator_credentials (
    token_sha256 bytea PRIMARY KEY,
    operator_id  text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);

-- The billing ledger ---------------------------------------------------------------------------

-- One row per ledger line: a credit to a customer's account for one cause, or the reversal of
-- one. The line says why (cause); its money is in ledger_entries.
CREATE TABLE ledger_lines (
    line_id            bigint PRIMARY KEY,
    idempotency_key    text NOT NULL UNIQUE,   -- its cause and revision: a replay cannot post it twice
    service_account_id text NOT NULL,
    program_id         text NOT NULL,
    provider_id        text NOT NULL,          -- whose enrolled thermostat earned it: what that provider may read
    credit_type        text NOT NULL CHECK (credit_type IN ('CAPACITY', 'ENERGY', 'SIGNUP_BONUS', 'REBATE', 'REWARD')),
    event_id           text,
    bill_period_start  date NOT NULL,
    bill_period_end    date NOT NULL,
    cap_year           smallint NOT NULL,      -- the calendar year whose caps it counts toward
    cap_period_start   date,                   -- the bill period whose cap it counts toward (capacity)
    amount_cents       bigint NOT NULL CHECK (amount_cents <> 0),  -- to the customer; negative for a reversal
    reverses_line_id   bigint REFERENCES ledger_lines (line_id),
    cause              jsonb NOT NULL,         -- inputs: event, baseline, kWh, rate, rule, caps applied
    posted_at          timestamptz NOT NULL,
    CHECK (bill_period_start <= bill_period_end),
    CHECK ((reverses_line_id IS NULL) = (amount_cents > 0))
);
CREATE INDEX ledger_lines_account_period ON ledger_lines (service_account_id, bill_period_start);
CREATE INDEX ledger_lines_event ON ledger_lines (event_id) WHERE event_id IS NOT NULL;
CREATE UNIQUE INDEX ledger_lines_reversed_once ON ledger_lines (reverses_line_id) WHERE reverses_line_id IS NOT NULL;
CREATE SEQUENCE ledger_line_ids AS bigint;

-- Every line's entries: the customer's account is credited, the program's incentive expense
-- debited. Debits are positive, credits negative; a line's entries sum to zero.
CREATE TABLE ledger_entries (
    entry_id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    line_id            bigint NOT NULL,
    ledger_account     text NOT NULL CHECK (ledger_account IN ('CUSTOMER_CREDIT', 'PROGRAM_INCENTIVE_EXPENSE')),
    ledger_account_id  text NOT NULL,          -- the service account, or the program
    amount_cents       bigint NOT NULL CHECK (amount_cents <> 0)
);
CREATE INDEX ledger_entries_line ON ledger_entries (line_id);

-- Balance: all the entries of a line arrive in one statement, and they sum to zero, and the
-- line exists. Checked once per statement over its new rows (COPY included), not per row.
CREATE FUNCTION ledger_entries_balance() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    unbalanced bigint;
BEGIN
    SELECT n.line_id INTO unbalanced
    FROM (SELECT line_id, sum(amount_cents) AS total, count(*) AS entries FROM new_entries GROUP BY line_id) n
    LEFT JOIN ledger_lines l ON l.line_id = n.line_id
    WHERE n.total <> 0 OR n.entries < 2 OR l.line_id IS NULL
       OR (SELECT count(*) FROM ledger_entries e WHERE e.line_id = n.line_id) <> n.entries
    LIMIT 1;
    IF unbalanced IS NOT NULL THEN
        RAISE EXCEPTION 'ledger line % is unbalanced: its entries must sum to zero, arrive together, and belong to a posted line', unbalanced
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER ledger_entries_balance AFTER INSERT ON ledger_entries
    REFERENCING NEW TABLE AS new_entries FOR EACH STATEMENT EXECUTE FUNCTION ledger_entries_balance();

-- Append-only: posted lines and entries are never changed or removed; a correction is a
-- reversing line.
CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: post a reversing line instead of %', TG_TABLE_NAME, lower(TG_OP)
        USING ERRCODE = 'restrict_violation';
END $$;
CREATE TRIGGER ledger_lines_append_only BEFORE UPDATE OR DELETE ON ledger_lines
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER ledger_lines_no_truncate BEFORE TRUNCATE ON ledger_lines
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER ledger_entries_no_truncate BEFORE TRUNCATE ON ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();

-- Bill periods closed: their lines are disbursed together, one statement per account.
CREATE TABLE bill_statements (
    service_account_id text NOT NULL,
    bill_period_start  date NOT NULL,
    bill_period_end    date NOT NULL,
    line_count         integer NOT NULL,
    total_cents        bigint NOT NULL,
    closed_at          timestamptz NOT NULL,
    PRIMARY KEY (service_account_id, bill_period_start)
);

-- Settlement's working state (not the ledger: these rows change) ------------------------------

-- What bill periods and capacity credits need of each account.
CREATE TABLE settlement_accounts (
    service_account_id text PRIMARY KEY,
    bill_cycle_day     smallint CHECK (bill_cycle_day BETWEEN 1 AND 31),  -- null until the customer account arrives
    enrollments        jsonb NOT NULL DEFAULT '[]'  -- EnrollmentPeriod records, as enrollment last stated them
);
CREATE INDEX settlement_accounts_cycle ON settlement_accounts (bill_cycle_day);

-- The latest result each cause settled to: the revision read, the inputs, the line in effect.
-- cause_key: energy/<event>/<account>, capacity/<program>/<account>/<first day>, incentive/<claim>.
CREATE TABLE settlement_results (
    cause_key          text PRIMARY KEY,
    revision           integer NOT NULL,
    service_account_id text NOT NULL,
    program_id         text NOT NULL,
    credit_type        text NOT NULL,
    event_id           text,
    status             text NOT NULL,  -- performance status, or PENDING / POSTED / CANCELLED / REVERSED for incentives
    reason             text,
    baseline_kwh       numeric(21, 9),
    actual_kwh         numeric(21, 9),
    reduction_kwh      numeric(21, 9),
    earned_cents       bigint NOT NULL DEFAULT 0,  -- before caps
    paid_cents         bigint NOT NULL DEFAULT 0,  -- the line in effect (after caps)
    line_id            bigint,
    detail             jsonb NOT NULL DEFAULT '{}',
    updated_at         timestamptz NOT NULL
);
CREATE INDEX settlement_results_account ON settlement_results (service_account_id, credit_type);
CREATE INDEX settlement_results_event ON settlement_results (event_id) WHERE event_id IS NOT NULL;

-- Sign-up bonuses and rebates granted by enrollment, until posted at the close of their bill period.
CREATE TABLE settlement_incentives (
    claim_id           text PRIMARY KEY,
    kind               text NOT NULL CHECK (kind IN ('SIGNUP_BONUS', 'REBATE')),
    program_id         text NOT NULL,
    provider_id        text NOT NULL,
    service_account_id text NOT NULL,
    thermostat_serial  text NOT NULL,
    amount_cents       bigint NOT NULL,
    effective_date     date NOT NULL,
    post_on            date NOT NULL,
    status             text NOT NULL CHECK (status IN ('PENDING', 'POSTED', 'CANCELLED', 'REVERSED')),
    line_id            bigint,
    fund_remaining     numeric(14, 2),  -- the program's bonus fund left after this decision
    decided_at         timestamptz NOT NULL
);
CREATE INDEX settlement_incentives_due ON settlement_incentives (post_on) WHERE status = 'PENDING';

-- The last local day whose bill periods are closed (one row).
CREATE TABLE settlement_closes (
    one_row         boolean PRIMARY KEY DEFAULT true CHECK (one_row),
    last_closed_day date NOT NULL
);

-- The next Kafka offset to read, per input partition, written with the lines it produced.
CREATE TABLE settlement_positions (
    consumer    text NOT NULL,
    topic       text NOT NULL,
    partition   integer NOT NULL,
    next_offset bigint NOT NULL,
    PRIMARY KEY (consumer, topic, partition)
);

-- Views for billing and analysts -----------------------------------------------------------------

-- CONTRACTS.md: one row per posted customer credit line (reversals negative).
CREATE VIEW customer_credits AS
SELECT l.service_account_id, l.program_id, l.credit_type, l.event_id, l.bill_period_start, l.bill_period_end,
       -e.amount_cents AS amount_cents, l.posted_at, e.entry_id
FROM ledger_entries e
JOIN ledger_lines l ON l.line_id = e.line_id
WHERE e.ledger_account = 'CUSTOMER_CREDIT';

-- Every ledger account's balance: customers' credits (negative: owed to them) and programs'
-- expense (positive). The whole ledger sums to zero.
CREATE VIEW ledger_balances AS
SELECT ledger_account, ledger_account_id, sum(amount_cents) AS balance_cents, count(*) AS entries
FROM ledger_entries
GROUP BY ledger_account, ledger_account_id;

-- Credits per program, credit type and month (local month of posting).
CREATE VIEW program_totals AS
SELECT program_id, credit_type,
       date_trunc('month', posted_at AT TIME ZONE 'America/Los_Angeles')::date AS month,
       count(*) AS line_count,
       count(DISTINCT service_account_id) AS accounts,
       sum(amount_cents) AS amount_cents,
       sum(amount_cents) FILTER (WHERE amount_cents < 0) AS reversed_cents
FROM ledger_lines
GROUP BY program_id, credit_type, month;

-- Per program and year: event hours used (from dispatch's projection) and the bonus fund.
CREATE VIEW program_year_status AS
WITH hours AS (
    SELECT program_id, extract(year FROM start_at AT TIME ZONE 'America/Los_Angeles')::int AS year,
           sum(counted_ms) / 3600000.0 AS event_hours_used, count(*) AS events
    FROM dispatch_events WHERE status <> 'REJECTED'
    GROUP BY 1, 2
), bonuses AS (
    SELECT program_id, extract(year FROM effective_date)::int AS year,
           sum(amount_cents) FILTER (WHERE status IN ('PENDING', 'POSTED')) AS bonus_committed_cents,
           sum(amount_cents) FILTER (WHERE status = 'POSTED') AS bonus_posted_cents,
           count(*) FILTER (WHERE status IN ('PENDING', 'POSTED')) AS bonuses
    FROM settlement_incentives WHERE kind = 'SIGNUP_BONUS'
    GROUP BY 1, 2
), fund AS (
    SELECT DISTINCT ON (program_id) program_id, fund_remaining
    FROM settlement_incentives WHERE kind = 'SIGNUP_BONUS' AND fund_remaining IS NOT NULL
    ORDER BY program_id, decided_at DESC
)
SELECT coalesce(h.program_id, b.program_id) AS program_id, coalesce(h.year, b.year) AS year,
       coalesce(h.events, 0) AS events, coalesce(h.event_hours_used, 0) AS event_hours_used,
       coalesce(b.bonuses, 0) AS bonuses, coalesce(b.bonus_committed_cents, 0) AS bonus_committed_cents,
       coalesce(b.bonus_posted_cents, 0) AS bonus_posted_cents,
       (f.fund_remaining * 100)::bigint AS bonus_fund_left_cents
FROM hours h
FULL JOIN bonuses b ON b.program_id = h.program_id AND b.year = h.year
LEFT JOIN fund f ON f.program_id = coalesce(h.program_id, b.program_id);
