-- Rates across reboots: a counter that restarts from zero at a reboot can
-- climb past its old value before the next report, and then looks like an
-- ordinary increase. The report's own uptime tells: an uptime shorter than the
-- interval since the previous report means the device booted inside that
-- interval, so the interval has no rate. Without an uptime in the same report,
-- a decreasing counter is still the only sign of a reset.

CREATE OR REPLACE VIEW interface_rates AS
SELECT time, device_id, interface,
       extract(epoch FROM time - prev_time) AS interval_s,
       CASE WHEN bytes_sent >= prev_bytes_sent AND NOT rebooted
            THEN (bytes_sent - prev_bytes_sent) * 8 / NULLIF(extract(epoch FROM time - prev_time), 0) END
           AS tx_bps,
       CASE WHEN bytes_received >= prev_bytes_received AND NOT rebooted
            THEN (bytes_received - prev_bytes_received) * 8 / NULLIF(extract(epoch FROM time - prev_time), 0) END
           AS rx_bps,
       CASE WHEN packets_sent >= prev_packets_sent AND NOT rebooted
            THEN (packets_sent - prev_packets_sent) / NULLIF(extract(epoch FROM time - prev_time), 0) END
           AS tx_pps,
       CASE WHEN packets_received >= prev_packets_received AND NOT rebooted
            THEN (packets_received - prev_packets_received) / NULLIF(extract(epoch FROM time - prev_time), 0) END
           AS rx_pps,
       (bytes_sent < prev_bytes_sent OR bytes_received < prev_bytes_received OR rebooted) AS counter_reset
FROM (
    SELECT s.*,
           coalesce(d.uptime_s < extract(epoch FROM s.time - s.prev_time), false) AS rebooted
    FROM (
        SELECT s.*,
               lag(time)             OVER w AS prev_time,
               lag(bytes_sent)       OVER w AS prev_bytes_sent,
               lag(bytes_received)   OVER w AS prev_bytes_received,
               lag(packets_sent)     OVER w AS prev_packets_sent,
               lag(packets_received) OVER w AS prev_packets_received
        FROM interface_stats s
        WINDOW w AS (PARTITION BY device_id, interface ORDER BY time)
    ) s
    LEFT JOIN device_stats d ON d.device_id = s.device_id AND d.time = s.time
) x
WHERE prev_time IS NOT NULL;

CREATE OR REPLACE VIEW radio_rates AS
SELECT time, device_id, radio, channel, band,
       extract(epoch FROM time - prev_time) AS interval_s,
       CASE WHEN bytes_sent >= prev_bytes_sent AND NOT rebooted
            THEN (bytes_sent - prev_bytes_sent) * 8 / NULLIF(extract(epoch FROM time - prev_time), 0) END
           AS tx_bps,
       CASE WHEN bytes_received >= prev_bytes_received AND NOT rebooted
            THEN (bytes_received - prev_bytes_received) * 8 / NULLIF(extract(epoch FROM time - prev_time), 0) END
           AS rx_bps,
       (bytes_sent < prev_bytes_sent OR bytes_received < prev_bytes_received OR rebooted) AS counter_reset
FROM (
    SELECT s.*,
           coalesce(d.uptime_s < extract(epoch FROM s.time - s.prev_time), false) AS rebooted
    FROM (
        SELECT s.*,
               lag(time)           OVER w AS prev_time,
               lag(bytes_sent)     OVER w AS prev_bytes_sent,
               lag(bytes_received) OVER w AS prev_bytes_received
        FROM radio_stats s
        WINDOW w AS (PARTITION BY device_id, radio ORDER BY time)
    ) s
    LEFT JOIN device_stats d ON d.device_id = s.device_id AND d.time = s.time
) x
WHERE prev_time IS NOT NULL;
