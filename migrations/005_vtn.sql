-- depends: 004_settlement_results
-- The OpenADR 3.1 VTN: OAuth clients and their tokens, events as OpenADR objects (projected from
-- the dispatch lifecycle), the decisions that answer the VTN's own requests, enrolled thermostats
-- (projected from the enrollment state), VEN reports, subscriptions and the webhook outbox.

-- A client's secret is kept as an scrypt hash; a token as its SHA-256. Neither is ever shown again.
CREATE TABLE vtn_clients (
    client_id   text PRIMARY KEY,
    role        text NOT NULL CHECK (role IN ('BL', 'VEN')),  -- a VEN client's id is its provider id
    secret_hash text NOT NULL,
    scopes      text[] NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    modified_at timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE TABLE vtn_tokens (
    token_sha256 bytea PRIMARY KEY,
    client_id    text NOT NULL REFERENCES vtn_clients (client_id) ON DELETE CASCADE,
    scopes       text[] NOT NULL,
    expires_at   timestamptz NOT NULL
);
CREATE INDEX vtn_tokens_expiry ON vtn_tokens (expires_at);

-- What a business-logic client asked for beyond the EnergyEventRequest (eventName, priority,
-- reportDescriptors), applied when dispatch accepts the request it travelled with. Identity: the
-- lifecycle record answering it carries the same (event_id, request_action, issued_at).
CREATE TABLE vtn_requests (
    event_id   text NOT NULL,
    action     text NOT NULL,
    issued_at  timestamptz NOT NULL,
    details    jsonb NOT NULL,
    PRIMARY KEY (event_id, action, issued_at)
);

-- Every lifecycle record that answers a request (source_offset: its offset in
-- utility.energy-events.v1): the API waits here for the answer to the request it produced.
CREATE TABLE vtn_decisions (
    source_offset bigint PRIMARY KEY,
    event_id      text NOT NULL,
    status        text NOT NULL,
    revision      integer NOT NULL,
    failures      jsonb NOT NULL DEFAULT '[]',
    decided_at    timestamptz NOT NULL
);

-- Each event as it stands (latest accepted revision); a cancelled one keeps its row, cancelled.
CREATE TABLE vtn_events (
    event_id          text PRIMARY KEY,
    program_id        text NOT NULL,
    revision          integer NOT NULL,
    reason            text NOT NULL,
    start_at          timestamptz NOT NULL,
    end_at            timestamptz NOT NULL,
    setpoint_offset_f integer NOT NULL,
    precool           boolean NOT NULL,
    targets           text[] NOT NULL,     -- provider ids; empty: every provider
    details           jsonb NOT NULL DEFAULT '{}',
    progress          text NOT NULL,       -- SCHEDULED, STARTED, ENDED
    created_at        timestamptz NOT NULL,
    modified_at       timestamptz NOT NULL,
    cancelled_at      timestamptz
);
CREATE INDEX vtn_events_listing ON vtn_events (created_at, event_id) WHERE cancelled_at IS NULL;

-- The latest AccountEnrollments of each account (gridflex.enrollment.state.v1): the VENs' resources.
CREATE TABLE vtn_accounts (
    service_account_id text PRIMARY KEY,
    enrollments        jsonb NOT NULL,
    source_partition   integer NOT NULL,
    source_offset      bigint NOT NULL
);
CREATE INDEX vtn_accounts_periods ON vtn_accounts USING gin (enrollments jsonb_path_ops);

CREATE TABLE vtn_reports (
    report_id   text PRIMARY KEY,
    client_id   text NOT NULL,             -- the reporting VEN's provider id
    event_id    text NOT NULL,
    program_id  text NOT NULL,
    body        jsonb NOT NULL,
    created_at  timestamptz NOT NULL,
    modified_at timestamptz NOT NULL
);
CREATE INDEX vtn_reports_client ON vtn_reports (client_id, created_at);

CREATE TABLE vtn_subscriptions (
    subscription_id text PRIMARY KEY,
    client_id       text NOT NULL,
    role            text NOT NULL CHECK (role IN ('BL', 'VEN')),
    body            jsonb NOT NULL,
    created_at      timestamptz NOT NULL,
    modified_at     timestamptz NOT NULL
);
CREATE INDEX vtn_subscriptions_client ON vtn_subscriptions (client_id, created_at);

-- The webhook outbox: one row per notification and callback URL, written in the transaction that
-- projects the lifecycle record, retried with exponential backoff, dead-lettered when it keeps failing.
CREATE TABLE vtn_notifications (
    notification_id  bigserial PRIMARY KEY,
    subscription_id  text NOT NULL,
    callback_url     text NOT NULL,
    bearer_token     text,                 -- the subscriber's own token for its endpoint
    body             jsonb NOT NULL,
    event_id         text NOT NULL,
    revision         integer NOT NULL,
    operation        text NOT NULL,
    source_topic     text NOT NULL,
    source_partition integer NOT NULL,
    source_offset    bigint NOT NULL,
    source_key       bytea,
    source_value     bytea,
    state            text NOT NULL DEFAULT 'PENDING' CHECK (state IN ('PENDING', 'DELIVERED', 'DEAD')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text,
    UNIQUE (subscription_id, callback_url, event_id, revision, operation)
);
CREATE INDEX vtn_notifications_due ON vtn_notifications (next_attempt_at) WHERE state = 'PENDING';
