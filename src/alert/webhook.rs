//! A generic JSON webhook (a SOAR, a chat bridge): `POST` of
//! `{"schema": "palisade.webhook.v1", "alerts": [ ...palisade.alert.v1 objects... ]}`.
//! Receivers de-duplicate on each alert's `id` (a retried request may repeat alerts the
//! receiver already took, if its answer was lost).

use crate::alert::Alert;
use crate::alert::notify::Format;

/// The schema tag of a webhook request.
pub const WEBHOOK_SCHEMA: &str = "palisade.webhook.v1";

/// The webhook request body.
pub struct WebhookFormat;

impl Format for WebhookFormat {
    fn body(&self, alerts: &[Alert]) -> Vec<u8> {
        let mut out = format!("{{\"schema\":\"{WEBHOOK_SCHEMA}\",\"alerts\":[").into_bytes();
        for (i, a) in alerts.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            serde_json::to_writer(&mut out, a).expect("alerts serialize");
        }
        out.extend_from_slice(b"]}");
        out
    }
}
