-- PostgreSQL schema for the storage engine of tansu 0.6.0
-- (`--storage-engine postgres://…`). tansu's PostgreSQL engine expects its
-- tables to exist and its crate ships only the SQLite DDL, so the testbed
-- creates a fresh database and loads this file before it starts a broker on
-- durable storage.
--
-- Written for this project from tansu-storage 0.6.0's queries (src/sql/*.sql,
-- src/pg/record_fetch.sql) and the Rust types its PostgreSQL engine binds
-- (src/pg.rs): int → i32, bigint → i64, smallint → i16, bytea → &[u8],
-- timestamp(tz) → SystemTime, uuid → Uuid, json → serde_json::Value. The
-- columns match the SQLite DDL of the same release; `record.transaction_id`
-- and `watermark.stable` exist only in the PostgreSQL queries.

create table cluster (
    id int generated always as identity primary key,
    name text not null unique,
    last_updated timestamp default current_timestamp not null,
    created_at timestamp default current_timestamp not null
);

create table topic (
    id int generated always as identity primary key,
    cluster int not null references cluster (id) on delete cascade,
    name text not null,
    uuid uuid not null,
    partitions int not null,
    replication_factor int not null,
    is_internal bool default false not null,
    last_updated timestamp default current_timestamp not null,
    created_at timestamp default current_timestamp not null,
    unique (cluster, name)
);

create table topition (
    id int generated always as identity primary key,
    topic int references topic (id) on delete cascade,
    partition int,
    last_updated timestamp default current_timestamp not null,
    created_at timestamp default current_timestamp not null,
    unique (topic, partition)
);

create table topic_configuration (
    id int generated always as identity primary key,
    topic int references topic (id) on delete cascade,
    name text not null,
    value text,
    last_updated timestamp default current_timestamp not null,
    created_at timestamp default current_timestamp not null,
    unique (topic, name)
);

create table watermark (
    id int generated always as identity primary key,
    topition int references topition (id) on delete cascade unique,
    low bigint,
    high bigint,
    stable bigint,
    last_updated timestamp default current_timestamp not null,
    created_at timestamp default current_timestamp not null
);

create table record (
    topition int references topition (id) on delete cascade,
    offset_id bigint not null,
    attributes smallint,
    producer_id bigint,
    producer_epoch smallint,
    timestamp timestamptz,
    k bytea,
    v bytea,
    -- fetches hide rows of transactions still in progress
    transaction_id xid8 default pg_current_xact_id() not null,
    last_updated timestamp default current_timestamp not null,
    created_at timestamp default current_timestamp not null,
    primary key (topition, offset_id)
);

create table header (
    topition int,
    offset_id bigint,
    k bytea,
    v bytea,
    last_updated timestamp default current_timestamp not null,
    created_at timestamp default current_timestamp not null,
    foreign key (topition, offset_id) references record (topition, offset_id) on delete cascade
);
create index header_record on header (topition, offset_id);

create table consumer_group (
    id int generated always as identity primary key,
    cluster int not null references cluster (id) on delete cascade,
    name text not null,
    last_updated timestamp default current_timestamp not null,
    created_at timestamp default current_timestamp not null,
    unique (cluster, name)
);

create table consumer_group_detail (
    id int generated always as identity primary key,
    consumer_group int references consumer_group (id) on delete cascade unique,
    e_tag uuid not null,
    detail json not null,
    last_updated timestamp default current_timestamp not null,
    created_at timestamp default current_timestamp not null
);

create table consumer_offset (
    id int generated always as identity primary key,
    consumer_group int references consumer_group (id) on delete cascade,
    topition int references topition (id) on delete cascade,
    committed_offset bigint,
    leader_epoch int,
    timestamp timestamp,
    metadata text,
    last_updated timestamp default current_timestamp not null,
    created_at timestamp default current_timestamp not null,
    unique (consumer_group, topition)
);

create table scram_credential (
    id int generated always as identity primary key,
    cluster int not null references cluster (id) on delete cascade,
    username text not null,
    mechanism int not null,
    salt bytea not null,
    iterations int not null,
    stored_key bytea not null,
    server_key bytea not null,
    last_updated timestamp default current_timestamp not null,
    created_at timestamp default current_timestamp not null,
    unique (cluster, username, mechanism)
);

-- idempotent producers
create table producer (
    id bigint generated by default as identity primary key,
    cluster int not null references cluster (id) on delete cascade,
    last_updated timestamp default current_timestamp not null,
    created_at timestamp default current_timestamp not null
);

create table producer_epoch (
    id int generated by default as identity primary key,
    producer bigint references producer (id) on delete cascade,
    epoch smallint default 0 not null,
    last_updated timestamp default current_timestamp not null,
    created_at timestamp default current_timestamp not null,
    unique (producer, epoch)
);

create table producer_detail (
    id bigint generated by default as identity primary key,
    producer_epoch int references producer_epoch (id) on delete cascade,
    topition int references topition (id) on delete cascade,
    sequence int default 0 not null,
    last_updated timestamp default current_timestamp not null,
    created_at timestamp default current_timestamp not null,
    unique (producer_epoch, topition)
);

-- transactional producers
create table txn (
    id bigint generated always as identity primary key,
    cluster int references cluster (id) on delete cascade,
    name text,
    producer bigint references producer (id) on delete cascade,
    last_updated timestamp default current_timestamp not null,
    created_at timestamp default current_timestamp not null,
    unique (cluster, name)
);

create table txn_detail (
    id bigint generated always as identity primary key,
    "transaction" bigint references txn (id) on delete cascade,
    producer_epoch int references producer_epoch (id) on delete cascade,
    transaction_timeout_ms int not null,
    started_at timestamp,
    status text,
    last_updated timestamp default current_timestamp not null,
    created_at timestamp default current_timestamp not null,
    unique ("transaction", producer_epoch)
);

create table txn_topition (
    id int generated always as identity primary key,
    txn_detail bigint references txn_detail (id) on delete cascade,
    topition int references topition (id) on delete cascade,
    last_updated timestamp default current_timestamp not null,
    created_at timestamp default current_timestamp not null,
    unique (txn_detail, topition)
);

create table txn_produce_offset (
    id int generated always as identity primary key,
    txn_topition int references txn_topition (id) on delete cascade unique,
    offset_start bigint,
    offset_end bigint,
    last_updated timestamp default current_timestamp not null,
    created_at timestamp default current_timestamp not null
);

create table txn_offset_commit (
    id int generated always as identity primary key,
    txn_detail bigint references txn_detail (id) on delete cascade,
    consumer_group int references consumer_group (id) on delete cascade,
    generation_id int,
    member_id text,
    last_updated timestamp default current_timestamp not null,
    created_at timestamp default current_timestamp not null,
    unique (txn_detail, consumer_group)
);

create table txn_offset_commit_tp (
    id int generated always as identity primary key,
    offset_commit int references txn_offset_commit (id) on delete cascade,
    topition int references topition (id) on delete cascade,
    committed_offset bigint,
    leader_epoch int,
    metadata text,
    last_updated timestamp default current_timestamp not null,
    created_at timestamp default current_timestamp not null,
    unique (offset_commit, topition)
);
