-- Rates from counters, computed in SQL rather than stored.
--
-- A counter that decreases was reset (reboot, interface reset, 32-bit wrap on
-- CPEs that truncate): the interval straddling the reset has no rate (NULL)
-- rather than a huge negative or bogus value. A reboot is also detected from
-- uptime going down in device_stats.

CREATE VIEW interface_rates AS
SELECT time, device_id, interface,
       extract(epoch FROM time - prev_time) AS interval_s,
       CASE WHEN bytes_sent >= prev_bytes_sent
            THEN (bytes_sent - prev_bytes_sent) * 8 / NULLIF(extract(epoch FROM time - prev_time), 0) END
           AS tx_bps,
       CASE WHEN bytes_received >= prev_bytes_received
            THEN (bytes_received - prev_bytes_received) * 8 / NULLIF(extract(epoch FROM time - prev_time), 0) END
           AS rx_bps,
       CASE WHEN packets_sent >= prev_packets_sent
            THEN (packets_sent - prev_packets_sent) / NULLIF(extract(epoch FROM time - prev_time), 0) END
           AS tx_pps,
       CASE WHEN packets_received >= prev_packets_received
            THEN (packets_received - prev_packets_received) / NULLIF(extract(epoch FROM time - prev_time), 0) END
           AS rx_pps,
       (bytes_sent < prev_bytes_sent OR bytes_received < prev_bytes_received) AS counter_reset
FROM (
    SELECT s.*,
           lag(time)             OVER w AS prev_time,
           lag(bytes_sent)       OVER w AS prev_bytes_sent,
           lag(bytes_received)   OVER w AS prev_bytes_received,
           lag(packets_sent)     OVER w AS prev_packets_sent,
           lag(packets_received) OVER w AS prev_packets_received
    FROM interface_stats s
    WINDOW w AS (PARTITION BY device_id, interface ORDER BY time)
) x
WHERE prev_time IS NOT NULL;

CREATE VIEW radio_rates AS
SELECT time, device_id, radio, channel, band,
       extract(epoch FROM time - prev_time) AS interval_s,
       CASE WHEN bytes_sent >= prev_bytes_sent
            THEN (bytes_sent - prev_bytes_sent) * 8 / NULLIF(extract(epoch FROM time - prev_time), 0) END
           AS tx_bps,
       CASE WHEN bytes_received >= prev_bytes_received
            THEN (bytes_received - prev_bytes_received) * 8 / NULLIF(extract(epoch FROM time - prev_time), 0) END
           AS rx_bps,
       (bytes_sent < prev_bytes_sent OR bytes_received < prev_bytes_received) AS counter_reset
FROM (
    SELECT s.*,
           lag(time)           OVER w AS prev_time,
           lag(bytes_sent)     OVER w AS prev_bytes_sent,
           lag(bytes_received) OVER w AS prev_bytes_received
    FROM radio_stats s
    WINDOW w AS (PARTITION BY device_id, radio ORDER BY time)
) x
WHERE prev_time IS NOT NULL;

CREATE VIEW client_rates AS
SELECT time, device_id, mac, host_name, band, signal_dbm,
       extract(epoch FROM time - prev_time) AS interval_s,
       CASE WHEN bytes_sent >= prev_bytes_sent AND connected_s >= prev_connected_s
            THEN (bytes_sent - prev_bytes_sent) * 8 / NULLIF(extract(epoch FROM time - prev_time), 0) END
           AS tx_bps,
       CASE WHEN bytes_received >= prev_bytes_received AND connected_s >= prev_connected_s
            THEN (bytes_received - prev_bytes_received) * 8 / NULLIF(extract(epoch FROM time - prev_time), 0) END
           AS rx_bps
FROM (
    SELECT s.*,
           lag(time)           OVER w AS prev_time,
           lag(bytes_sent)     OVER w AS prev_bytes_sent,
           lag(bytes_received) OVER w AS prev_bytes_received,
           lag(coalesce(connected_s, 0)) OVER w AS prev_connected_s
    FROM wifi_clients s
    WINDOW w AS (PARTITION BY device_id, mac ORDER BY time)
) x
WHERE prev_time IS NOT NULL;

-- Reboots: uptime went down between two reports of a device.
CREATE VIEW device_reboots AS
SELECT device_id, time AS seen_at, prev_time AS last_before, uptime_s, prev_uptime_s,
       time - make_interval(secs => uptime_s) AS booted_at
FROM (
    SELECT device_id, time, uptime_s,
           lag(time)     OVER w AS prev_time,
           lag(uptime_s) OVER w AS prev_uptime_s
    FROM device_stats
    WHERE uptime_s IS NOT NULL
    WINDOW w AS (PARTITION BY device_id ORDER BY time)
) x
WHERE uptime_s < prev_uptime_s;
