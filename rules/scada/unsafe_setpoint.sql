-- id: scada.unsafe_setpoint
-- title: Chlorine dosing setpoint outside the safe range
-- severity: critical
-- stream: scada
-- tags: attack.ics.impair_process_control, attack.ics.t0836, attack.ics.t0831
-- description: The chlorine dose setpoint of a water controller was set outside 0.5-4.0 mg/L (normal operation stays around 1.5-2.5); overdosing can poison the supply and underdosing leaves it undisinfected, so verify with the plant operator at once.
SELECT
  ts,
  host,
  src_ip,
  operator,
  asset,
  domain,
  tag,
  value,
  previous,
  value - previous AS delta
FROM scada
WHERE action = 'setpoint_write'
  AND tag = 'cl2_dose_setpoint'
  AND (value < 0.5 OR value > 4.0)
