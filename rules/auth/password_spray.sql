-- id: auth.password_spray
-- title: Password spray against one target
-- severity: high
-- stream: auth
-- tags: attack.credential_access, attack.t1110.003
-- description: One source address failed to log in to one target as 8 or more different user names within five minutes (a tumbling window of event time); staff mistype their own password from their own machine, so many names from one address is a password spray or credential-guessing run.
-- entity: src_ip
-- window: tumble 5m
SELECT
  src_ip,
  target,
  count(DISTINCT "user") AS users,
  count(*) AS attempts,
  sum(CASE WHEN reason = 'unknown_user' THEN 1 ELSE 0 END) AS unknown_users,
  min(geo['country']) AS country,
  min(geo['city']) AS city,
  min(ts) AS first_seen,
  max(ts) AS event_time
FROM auth
WHERE result = 'failure'
GROUP BY src_ip, target
HAVING count(DISTINCT "user") >= 8
