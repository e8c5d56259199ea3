-- id: scada.setpoint_unknown_host
-- title: Setpoint written from a host that is not an engineering workstation
-- severity: critical
-- stream: scada
-- tags: attack.ics.impair_process_control, attack.ics.t0836, attack.ics.t0848
-- description: A setpoint was changed from a host other than the engineering workstations ews-01 and ews-02, the only hosts allowed to write to controllers; treat as unauthorised process control until the change is confirmed with the plant.
SELECT
  ts,
  host,
  src_ip,
  operator,
  asset,
  domain,
  action,
  tag,
  value,
  previous
FROM scada
WHERE action = 'setpoint_write'
  AND host NOT IN ('ews-01', 'ews-02')
