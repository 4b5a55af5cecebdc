-- Offsets of each consumer, written in the same transaction as its effects:
-- a crash at any point leaves the database as an uninterrupted run would.
CREATE TABLE consumer_offsets (
    consumer    text    NOT NULL,
    topic       text    NOT NULL,
    "partition" integer NOT NULL,
    next_offset bigint  NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, topic, "partition")
);

-- Every event once, keyed by its delivery id: a second copy changes nothing.
CREATE TABLE webhook_events (
    source         text        NOT NULL,
    delivery_id    text        NOT NULL,
    event_type     text        NOT NULL,
    provider       text,
    schema_id      integer     NOT NULL,
    schema_version integer     NOT NULL,
    origin         text        NOT NULL,
    received_at    timestamptz NOT NULL,
    occurred_at    timestamptz,
    topic          text        NOT NULL,
    "partition"    integer     NOT NULL,
    "offset"       bigint      NOT NULL,
    entity_type    text,
    entity_id      text,
    payload        jsonb       NOT NULL,
    consumed_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, delivery_id)
);
CREATE INDEX webhook_events_entity ON webhook_events (entity_type, entity_id);

-- Current state per entity. `version_at` is the provider's own ordering
-- field; a row is only replaced by an event with a strictly later one.
CREATE TABLE payment_intents (
    id          text PRIMARY KEY,
    amount      bigint,
    currency    text,
    status      text,
    customer    text,
    version_at  timestamptz NOT NULL,
    delivery_id text NOT NULL
);

CREATE TABLE charges (
    id              text PRIMARY KEY,
    amount          bigint,
    amount_refunded bigint,
    currency        text,
    refunded        boolean,
    status          text,
    payment_intent  text,
    version_at      timestamptz NOT NULL,
    delivery_id     text NOT NULL
);

CREATE TABLE customers (
    id          text PRIMARY KEY,
    email       text,
    name        text,
    phone       text,
    version_at  timestamptz NOT NULL,
    delivery_id text NOT NULL
);

CREATE TABLE orders (
    id               text PRIMARY KEY,
    name             text,
    email            text,
    currency         text,
    total_price      numeric,
    financial_status text,
    version_at       timestamptz NOT NULL,
    delivery_id      text NOT NULL
);

CREATE TABLE pull_requests (
    repository  text    NOT NULL,
    number      bigint  NOT NULL,
    title       text,
    state       text,
    merged      boolean,
    version_at  timestamptz NOT NULL,
    delivery_id text NOT NULL,
    PRIMARY KEY (repository, number)
);
