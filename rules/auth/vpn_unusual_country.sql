-- id: auth.vpn_unusual_country
-- title: VPN login from outside Canada and the US
-- severity: medium
-- stream: auth
-- tags: attack.initial_access, attack.t1133, attack.t1078, attack.ics.t0822
-- description: A successful VPN login came from an address located outside Canada and the United States; staff and vendors connect from North America, so check with the account owner whether they are travelling or the credential is stolen.
SELECT
  ts,
  "user",
  src_ip,
  target,
  method,
  result,
  geo['country'] AS country,
  geo['city'] AS city
FROM auth
WHERE method = 'vpn'
  AND result = 'success'
  AND geo['country'] NOT IN ('CA', 'US')
