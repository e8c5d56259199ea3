-- id: net.port_scan
-- title: Port scan of a single host
-- severity: high
-- stream: netflow
-- tags: attack.discovery, attack.t1046, attack.ics.t0846
-- description: One source reached 30 or more distinct destination ports on one host within five minutes (a tumbling window of event time, so the alert does not depend on how records were batched); benign clients use a handful of service ports, so this is a service sweep (nmap-style) and, from a kiosk or IoT zone towards OT, a likely compromised device mapping a controller.
-- entity: src_ip
-- window: tumble 5m
SELECT
  src_ip,
  dst_ip,
  src_zone,
  dst_zone,
  count(DISTINCT dst_port) AS ports,
  count(*) AS flows,
  sum(CASE WHEN action = 'deny' THEN 1 ELSE 0 END) AS denied,
  min(dst_port) AS lowest_port,
  max(dst_port) AS highest_port,
  min(ts) AS first_seen,
  max(ts) AS event_time
FROM netflow
GROUP BY src_ip, dst_ip, src_zone, dst_zone
HAVING count(DISTINCT dst_port) >= 30
