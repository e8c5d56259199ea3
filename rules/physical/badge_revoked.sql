-- id: badge.revoked_attempt
-- title: Revoked badge used at a door
-- severity: medium
-- stream: badge
-- tags: attack.initial_access, attack.t1078, physical.access_control
-- description: A badge that has been revoked (lost, stolen or a former employee's) was presented at a door and denied; someone is trying to enter with a badge they should not have, so dispatch security and review the door camera.
SELECT
  ts,
  badge_id,
  holder,
  site,
  door,
  zone,
  result,
  reason
FROM badge
WHERE result = 'denied'
  AND reason = 'revoked'
