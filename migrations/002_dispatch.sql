-- depends: 001_enrollment
-- Dispatch: every step of every energy event, the current state of each event, and each
-- thermostat's instructions and acknowledgment (the projection the `gridflex events` command reads).

-- One row per lifecycle step. Identity: (event, revision, status); a rejection is identified by
-- the request it rejected. A step re-sent after a crash is the same row (ON CONFLICT DO NOTHING).
CREATE TABLE dispatch_event_steps (
    step_key          text PRIMARY KEY,
    event_id          text NOT NULL,
    program_id        text NOT NULL,
    status            text NOT NULL,
    revision          integer NOT NULL,
    request_action    text,
    reason            text NOT NULL,
    start_at          timestamptz NOT NULL,
    end_at            timestamptz NOT NULL,
    setpoint_offset_f integer NOT NULL,
    precool           boolean NOT NULL,
    targets           text[] NOT NULL,
    issued_at         timestamptz NOT NULL,
    decided_at        timestamptz NOT NULL,
    failures          jsonb NOT NULL DEFAULT '[]',
    counted_ms        bigint NOT NULL,
    program_year      integer NOT NULL,
    year_used_ms      bigint NOT NULL,
    year_limit_ms     bigint,
    request_offset    bigint,
    lifecycle_offset  bigint NOT NULL
);
CREATE INDEX dispatch_event_steps_event ON dispatch_event_steps (event_id, lifecycle_offset);
CREATE INDEX dispatch_event_steps_program_year ON dispatch_event_steps (program_id, program_year, lifecycle_offset);

-- The latest accepted step of each event (rejections never change an event).
CREATE TABLE dispatch_events (
    event_id          text PRIMARY KEY,
    program_id        text NOT NULL,
    status            text NOT NULL,
    revision          integer NOT NULL,
    start_at          timestamptz NOT NULL,
    end_at            timestamptz NOT NULL,
    setpoint_offset_f integer NOT NULL,
    precool           boolean NOT NULL,
    targets           text[] NOT NULL,
    counted_ms        bigint NOT NULL,
    lifecycle_offset  bigint NOT NULL
);

-- One row per thermostat an event reached: its latest instruction and its provider's latest answer.
-- Instructions and acknowledgments arrive on different topics, in either order.
CREATE TABLE dispatch_devices (
    event_id            text NOT NULL,
    provider_id         text NOT NULL,
    thermostat_serial   text NOT NULL,
    service_account_id  text,
    program_id          text,
    action              text,          -- latest instruction: SCHEDULE, UPDATE or CANCEL
    precool_start       timestamptz,
    first_instructed_at timestamptz,   -- when the SCHEDULE was issued
    last_instructed_at  timestamptz,
    ack_status          text,          -- ACCEPTED, REJECTED, OPTED_OUT, FAILED
    ack_at              timestamptz,   -- as the provider reports it
    PRIMARY KEY (event_id, provider_id, thermostat_serial)
);
