-- bulkflow schema, version 1.
--
-- Dictionaries keep device keys and parameter names out of the wide tables.
-- Time-series tables are unique on (device, key, time) so that a report
-- delivered twice (a CPE resend, an edge batch resent after a lost ack) is
-- stored once: writers use INSERT .. ON CONFLICT DO NOTHING.
-- Counters are numeric(20,0): TR-181 StatsCounter64 values exceed bigint.

CREATE TABLE devices (
    id             integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_key     text NOT NULL UNIQUE,  -- GenieACS id (OUI-ProductClass-Serial) or the name it reports under
    oui            text,
    product_class  text,
    serial         text,
    identified_by  text NOT NULL,         -- query | basic_user | report
    first_seen     timestamptz NOT NULL,
    last_seen      timestamptz NOT NULL,
    last_edge      text                   -- edge id, or 'direct' for reports posted to central
);

CREATE TABLE parameters (
    id    integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name  text NOT NULL UNIQUE
);

-- Every reported parameter. value_num holds numbers, booleans (1/0) and text
-- that reads as a number; value_text holds text exactly as sent, and
-- 'true'/'false' for booleans.
CREATE TABLE samples (
    time          timestamptz NOT NULL,
    device_id     integer NOT NULL,
    parameter_id  integer NOT NULL,
    value_num     numeric,
    value_text    text,
    UNIQUE (device_id, parameter_id, time)
);

CREATE TABLE device_stats (
    time              timestamptz NOT NULL,
    device_id         integer NOT NULL,
    uptime_s          bigint,
    memory_total_kib  bigint,
    memory_free_kib   bigint,
    cpu_percent       integer,
    UNIQUE (device_id, time)
);

CREATE TABLE interface_stats (
    time                      timestamptz NOT NULL,
    device_id                 integer NOT NULL,
    interface                 integer NOT NULL,  -- Device.IP.Interface.{i}
    bytes_sent                numeric(20,0),
    bytes_received            numeric(20,0),
    packets_sent              numeric(20,0),
    packets_received          numeric(20,0),
    errors_sent               numeric(20,0),
    errors_received           numeric(20,0),
    discard_packets_sent      numeric(20,0),
    discard_packets_received  numeric(20,0),
    UNIQUE (device_id, interface, time)
);

CREATE TABLE radio_stats (
    time              timestamptz NOT NULL,
    device_id         integer NOT NULL,
    radio             integer NOT NULL,  -- Device.WiFi.Radio.{i}
    channel           integer,
    band              text,
    bandwidth         text,
    bytes_sent        numeric(20,0),
    bytes_received    numeric(20,0),
    packets_sent      numeric(20,0),
    packets_received  numeric(20,0),
    errors_sent       numeric(20,0),
    errors_received   numeric(20,0),
    noise_dbm         integer,
    UNIQUE (device_id, radio, time)
);

CREATE TABLE wifi_neighbors (
    time             timestamptz NOT NULL,
    device_id        integer NOT NULL,
    result           integer NOT NULL,  -- NeighboringWiFiDiagnostic.Result.{i}
    bssid            text,
    ssid             text,              -- exactly as reported, blanks and separators included
    channel          integer,
    band             text,
    bandwidth        text,
    signal_dbm       integer,
    noise_dbm        integer,
    security_mode    text,
    encryption_mode  text,
    mode             text,
    standards        text,
    radio            text,
    UNIQUE (device_id, result, time)
);

CREATE TABLE wifi_clients (
    time                    timestamptz NOT NULL,
    device_id               integer NOT NULL,
    mac                     text NOT NULL,  -- lower case, ':'-separated
    source                  text NOT NULL,  -- data_elements | access_point
    attached_to             text,           -- e.g. DataElements Device.1.Radio.1.BSS.2, AccessPoint.1
    ssid                    text,
    bssid                   text,
    band                    text,
    host_name               text,           -- from Hosts.Host by MAC
    signal_dbm              numeric(5,1),   -- RCPI converted for DataElements
    bytes_sent              numeric(20,0),
    bytes_received          numeric(20,0),
    packets_sent            numeric(20,0),
    packets_received        numeric(20,0),
    errors_sent             numeric(20,0),
    errors_received         numeric(20,0),
    retrans_count           numeric(20,0),
    last_downlink_rate_kbps bigint,
    last_uplink_rate_kbps   bigint,
    connected_s             bigint,
    UNIQUE (device_id, mac, time)
);

-- Edge batches whose rows are committed: written in the same transaction as
-- the rows, so a batch delivered twice is stored once, and read back to tell
-- edges which batches they may delete.
CREATE TABLE ingested_batches (
    edge_id       text NOT NULL,
    batch_seq     bigint NOT NULL,
    reports       integer NOT NULL,
    parameters    integer NOT NULL,
    committed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (edge_id, batch_seq)
);
