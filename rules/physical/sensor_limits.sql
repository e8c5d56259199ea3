-- id: sensor.physical_limits
-- title: Physically impossible sensor reading
-- severity: high
-- stream: sensors
-- tags: attack.ics.t0856, attack.ics.t0832, attack.ics.impair_process_control
-- description: A field sensor reported a value no real process can produce (e.g. negative or above 10 mg/L chlorine); either the sensor is broken or its telemetry is being spoofed or tampered with to mislead operators, so check the device and its readings in the HMI.
SELECT
  ts,
  asset,
  domain,
  metric,
  value,
  unit,
  CASE metric
    WHEN 'chlorine_mg_l' THEN '0..10'
    WHEN 'pressure_bar' THEN '0..16'
    WHEN 'flow_m3h' THEN '0..5000'
    WHEN 'level_m' THEN '0..20'
    WHEN 'voltage_kv' THEN '0..20'
    WHEN 'load_mw' THEN '0..50'
    WHEN 'frequency_hz' THEN '55..65'
    WHEN 'queue_len' THEN '0..500'
  END AS valid_range
FROM sensors
WHERE (metric = 'chlorine_mg_l' AND (value < 0 OR value > 10))
   OR (metric = 'pressure_bar' AND (value < 0 OR value > 16))
   OR (metric = 'flow_m3h' AND (value < 0 OR value > 5000))
   OR (metric = 'level_m' AND (value < 0 OR value > 20))
   OR (metric = 'voltage_kv' AND (value < 0 OR value > 20))
   OR (metric = 'load_mw' AND (value < 0 OR value > 50))
   OR (metric = 'frequency_hz' AND (value < 55 OR value > 65))
   OR (metric = 'queue_len' AND (value < 0 OR value > 500))
