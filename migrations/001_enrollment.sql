-- Enrollment: the providers' API credentials, their HTTP submissions, and the projection of
-- enrollment decisions and account states that the enrollment API reads.

-- Only a token's SHA-256 is stored; the token itself is shown once, when minted.
CREATE TABLE provider_credentials (
    token_sha256 bytea PRIMARY KEY,
    provider_id  text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);
CREATE INDEX provider_credentials_active ON provider_credentials (provider_id) WHERE revoked_at IS NULL;

-- What each provider POSTed, as validated: a re-POST of a request_id must carry the same body.
CREATE TABLE enrollment_submissions (
    provider_id  text NOT NULL,
    request_id   text NOT NULL,
    body         jsonb NOT NULL,
    submitted_at timestamptz NOT NULL,
    PRIMARY KEY (provider_id, request_id)
);

-- One row per decided request; the first decision of a request wins (ON CONFLICT DO NOTHING).
CREATE TABLE enrollment_decisions (
    provider_id        text NOT NULL,
    request_id         text NOT NULL,
    program_id         text NOT NULL,
    action             text NOT NULL,
    service_account_id text NOT NULL,
    thermostat_serial  text NOT NULL,
    outcome            text NOT NULL,
    effective_date     date,
    failures           jsonb NOT NULL DEFAULT '[]',
    lockout_until      date,
    requested_at       timestamptz NOT NULL,
    decided_at         timestamptz NOT NULL,
    source_topic       text NOT NULL,
    source_partition   integer NOT NULL,
    source_offset      bigint NOT NULL,
    PRIMARY KEY (provider_id, request_id)
);
CREATE INDEX enrollment_decisions_account ON enrollment_decisions (provider_id, service_account_id);
CREATE INDEX enrollment_decisions_thermostat ON enrollment_decisions (provider_id, thermostat_serial);

-- The latest AccountEnrollments of each account (gridflex.enrollment.state.v1). A record
-- replaces the row only when it comes later in the partition (same key, same partition).
CREATE TABLE enrollment_accounts (
    service_account_id text PRIMARY KEY,
    state              jsonb,  -- null after a tombstone
    updated_at         timestamptz,
    source_partition   integer NOT NULL,
    source_offset      bigint NOT NULL
);
-- Finds the accounts a provider's thermostat is enrolled on: state->'enrollments' @> '[{...}]'.
CREATE INDEX enrollment_accounts_periods ON enrollment_accounts USING gin ((state -> 'enrollments') jsonb_path_ops);
