-- id: net.bulk_exfiltration
-- title: Bulk upload from the camera network to the internet
-- severity: high
-- stream: netflow
-- tags: attack.exfiltration, attack.t1048, attack.t1567
-- description: A host in the cameras zone (cameras, NVR, LPR servers) sent over 100 MB in one flow to an internet address; these devices only ever stream to the NVR or push plate reads to the DMZ, so this is likely theft of video or licence-plate data.
SELECT
  ts,
  src_ip,
  src_port,
  dst_ip,
  dst_port,
  proto,
  bytes_out,
  bytes_out / 1000000 AS mb_out,
  bytes_in,
  duration_ms,
  action,
  src_zone,
  dst_zone
FROM netflow
WHERE src_zone = 'cameras'
  AND dst_zone = 'internet'
  AND bytes_out > 100000000
