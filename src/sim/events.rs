//! One typed event per stream, and the [`Sink`] that renders it into a [`SimRecord`].
//!
//! In: an event struct (addresses as `u32`, text as `&'static str`). Out: a record with the
//! stream's topic, key (its entity), `ts_ms` and the JSON bytes of `deploy/palisade.toml`'s
//! schema for that stream, fields in schema order.
//! Guarantee: key and value buffers are taken from a pool that the simulator refills with the
//! previous second's records, so in steady state rendering allocates nothing.

use super::SimRecord;
use super::city::{Metric, zone_of};
use super::emit::{Obj, push_ip, push_u64};

pub(crate) const TOPIC_NETFLOW: &str = "city.netflow";
pub(crate) const TOPIC_AUTH: &str = "city.auth";
pub(crate) const TOPIC_BADGE: &str = "city.badge";
pub(crate) const TOPIC_SCADA: &str = "city.scada";
pub(crate) const TOPIC_SENSORS: &str = "city.sensors";
pub(crate) const TOPIC_PUMPS: &str = "city.pumps";

/// A netflow record; zones are derived from the addresses.
pub(crate) struct Flow {
    pub(crate) ts: i64,
    pub(crate) src: u32,
    pub(crate) sport: i64,
    pub(crate) dst: u32,
    pub(crate) dport: i64,
    pub(crate) proto: &'static str,
    pub(crate) bytes_out: i64,
    pub(crate) bytes_in: i64,
    pub(crate) packets: i64,
    pub(crate) duration_ms: i64,
    pub(crate) action: &'static str,
}

pub(crate) struct Auth {
    pub(crate) ts: i64,
    pub(crate) user: &'static str,
    pub(crate) src: u32,
    pub(crate) target: &'static str,
    pub(crate) method: &'static str,
    pub(crate) result: &'static str,
    pub(crate) reason: &'static str,
    pub(crate) country: &'static str,
    pub(crate) city: &'static str,
}

pub(crate) struct Badge {
    pub(crate) ts: i64,
    /// Written `B-<number>`.
    pub(crate) badge: u32,
    pub(crate) holder: &'static str,
    pub(crate) site: &'static str,
    pub(crate) door: &'static str,
    pub(crate) zone: &'static str,
    pub(crate) result: &'static str,
    pub(crate) reason: &'static str,
}

pub(crate) struct Scada {
    pub(crate) ts: i64,
    pub(crate) operator: &'static str,
    pub(crate) host: &'static str,
    pub(crate) src: u32,
    pub(crate) asset: &'static str,
    pub(crate) domain: &'static str,
    pub(crate) action: &'static str,
    pub(crate) tag: &'static str,
    pub(crate) value: f64,
    pub(crate) previous: f64,
}

pub(crate) struct Reading {
    pub(crate) ts: i64,
    pub(crate) asset: &'static str,
    pub(crate) domain: &'static str,
    pub(crate) metric: Metric,
    pub(crate) value: f64,
}

/// One poll of a pump station's controller.
pub(crate) struct PumpPoll {
    pub(crate) ts: i64,
    pub(crate) asset: &'static str,
    /// The run command: 1 while the controller asks the pump to run.
    pub(crate) cmd: i64,
    pub(crate) current_a: f64,
    pub(crate) pressure_bar: f64,
    pub(crate) flow_m3h: f64,
}

/// Renders events into `out`, reusing buffers from `pool`.
pub(crate) struct Sink<'a> {
    pub(crate) out: &'a mut Vec<SimRecord>,
    pub(crate) pool: &'a mut Vec<(String, Vec<u8>)>,
}

impl Sink<'_> {
    /// An empty key as bytes (so addresses can be rendered straight into it) and an empty
    /// value buffer.
    fn buffers(&mut self) -> (Vec<u8>, Vec<u8>) {
        match self.pool.pop() {
            Some((key, mut value)) => {
                let mut key = key.into_bytes();
                key.clear();
                value.clear();
                (key, value)
            }
            None => (Vec::with_capacity(24), Vec::with_capacity(320)),
        }
    }

    fn push(
        &mut self,
        topic: &'static str,
        ts_ms: i64,
        key: Vec<u8>,
        value: Vec<u8>,
        label: Option<&'static str>,
    ) {
        // Keys are built from ASCII tables and digits only.
        let key = String::from_utf8(key).expect("simulator keys are ASCII");
        self.out.push(SimRecord {
            topic,
            key,
            ts_ms,
            value,
            label,
        });
    }

    pub(crate) fn flow(&mut self, f: &Flow, label: Option<&'static str>) {
        let (mut key, mut value) = self.buffers();
        push_ip(&mut key, f.src);
        Obj::new(&mut value, f.ts)
            .raw_str("src_ip", &key)
            .int("src_port", f.sport)
            .ip("dst_ip", f.dst)
            .int("dst_port", f.dport)
            .str("proto", f.proto)
            .int("bytes_out", f.bytes_out)
            .int("bytes_in", f.bytes_in)
            .int("packets", f.packets)
            .int("duration_ms", f.duration_ms)
            .str("action", f.action)
            .str("src_zone", zone_of(f.src))
            .str("dst_zone", zone_of(f.dst))
            .finish(label);
        self.push(TOPIC_NETFLOW, f.ts, key, value, label);
    }

    pub(crate) fn auth(&mut self, a: &Auth, label: Option<&'static str>) {
        let (mut key, mut value) = self.buffers();
        key.extend_from_slice(a.user.as_bytes());
        Obj::new(&mut value, a.ts)
            .str("user", a.user)
            .ip("src_ip", a.src)
            .str("target", a.target)
            .str("method", a.method)
            .str("result", a.result)
            .str("reason", a.reason)
            .geo(a.country, a.city)
            .finish(label);
        self.push(TOPIC_AUTH, a.ts, key, value, label);
    }

    pub(crate) fn badge(&mut self, b: &Badge, label: Option<&'static str>) {
        let (mut key, mut value) = self.buffers();
        key.extend_from_slice(b"B-");
        push_u64(&mut key, u64::from(b.badge));
        Obj::new(&mut value, b.ts)
            .raw_str("badge_id", &key)
            .str("holder", b.holder)
            .str("site", b.site)
            .str("door", b.door)
            .str("zone", b.zone)
            .str("result", b.result)
            .str("reason", b.reason)
            .finish(label);
        self.push(TOPIC_BADGE, b.ts, key, value, label);
    }

    pub(crate) fn scada(&mut self, s: &Scada, label: Option<&'static str>) {
        let (mut key, mut value) = self.buffers();
        key.extend_from_slice(s.host.as_bytes());
        Obj::new(&mut value, s.ts)
            .str("operator", s.operator)
            .str("host", s.host)
            .ip("src_ip", s.src)
            .str("asset", s.asset)
            .str("domain", s.domain)
            .str("action", s.action)
            .str("tag", s.tag)
            .float("value", s.value, 2)
            .float("previous", s.previous, 2)
            .finish(label);
        self.push(TOPIC_SCADA, s.ts, key, value, label);
    }

    pub(crate) fn reading(&mut self, r: &Reading, label: Option<&'static str>) {
        let (mut key, mut value) = self.buffers();
        key.extend_from_slice(r.asset.as_bytes());
        Obj::new(&mut value, r.ts)
            .str("asset", r.asset)
            .str("domain", r.domain)
            .str("metric", r.metric.name())
            .float("value", r.value, r.metric.decimals())
            .str("unit", r.metric.unit())
            .finish(label);
        self.push(TOPIC_SENSORS, r.ts, key, value, label);
    }

    pub(crate) fn pump(&mut self, p: &PumpPoll, label: Option<&'static str>) {
        let (mut key, mut value) = self.buffers();
        key.extend_from_slice(p.asset.as_bytes());
        Obj::new(&mut value, p.ts)
            .str("asset", p.asset)
            .int("pump_cmd", p.cmd)
            .float("current_a", p.current_a, 1)
            .float("pressure_bar", p.pressure_bar, 2)
            .float("flow_m3h", p.flow_m3h, 1)
            .finish(label);
        self.push(TOPIC_PUMPS, p.ts, key, value, label);
    }
}
