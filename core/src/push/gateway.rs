//! HTTP pushers (spec: "Push Gateway API"): each event a user is notified
//! about is posted to the push gateways of their pushers, retried with
//! back-off, and never to a private address unless the operator allows it.

use std::{sync::Arc, time::Duration};

use myelin_plugin_api::http::OutboundClient;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::{
    rooms::pdu::Pdu,
    storage::{Storage, push::PusherRow},
};

/// Attempts per notification and gateway, with doubling delays between.
const ATTEMPTS: u32 = 6;
const FIRST_RETRY: Duration = Duration::from_millis(500);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One notification for one user, as decided by their push rules.
pub struct PushJob {
    pub user_id: String,
    pub pdu: Arc<Pdu>,
    pub actions: String,
}

#[derive(Clone)]
pub struct PushGateway {
    jobs: mpsc::UnboundedSender<PushJob>,
}

struct Sender {
    storage: Storage,
    outbound: OutboundClient,
    include_content: bool,
}

impl PushGateway {
    pub fn spawn(
        storage: Storage,
        allowed_private: Vec<ipnet::IpNet>,
        include_content: bool,
    ) -> Self {
        let sender = Arc::new(Sender {
            storage,
            outbound: OutboundClient::new(allowed_private, REQUEST_TIMEOUT),
            include_content,
        });
        let (jobs, queue) = mpsc::unbounded_channel::<PushJob>();
        tokio::spawn(dispatch(sender, queue));
        Self { jobs }
    }

    pub fn enqueue(&self, job: PushJob) {
        let _ = self.jobs.send(job);
    }
}

/// The most notifications whose users' pushers are read in one query.
const DISPATCH_BATCH: usize = 512;

/// Hands each notification to its user's HTTP pushers. Most users have
/// none, so the pushers of a whole batch of notifications (every member an
/// event notifies, and whatever else queued meanwhile) are read in one query.
async fn dispatch(sender: Arc<Sender>, mut queue: mpsc::UnboundedReceiver<PushJob>) {
    let mut batch = Vec::with_capacity(DISPATCH_BATCH);
    while queue.recv_many(&mut batch, DISPATCH_BATCH).await > 0 {
        let mut users: Vec<&str> = batch.iter().map(|job| job.user_id.as_str()).collect();
        users.sort_unstable();
        users.dedup();
        let mut pushers = match sender.storage.pushers_of(&users).await {
            Ok(pushers) => pushers,
            Err(err) => {
                tracing::warn!(error = %err, "could not read pushers");
                batch.clear();
                continue;
            }
        };
        pushers.retain(|pusher| pusher.kind == "http");
        for job in batch.drain(..) {
            let theirs: Vec<PusherRow> = pushers
                .iter()
                .filter(|pusher| pusher.user_id == job.user_id)
                .cloned()
                .collect();
            if !theirs.is_empty() {
                let sender = sender.clone();
                tokio::spawn(async move { sender.push(job, theirs).await });
            }
        }
    }
}

impl Sender {
    async fn push(&self, job: PushJob, pushers: Vec<PusherRow>) {
        let unread = match self.storage.unread_counts(&job.user_id).await {
            Ok(counts) => {
                let mut rooms: Vec<&String> = counts
                    .iter()
                    .filter(|(_, c)| c.notifications > 0)
                    .map(|((room, _), _)| room)
                    .collect();
                rooms.sort();
                rooms.dedup();
                rooms.len()
            }
            Err(_) => 0,
        };
        let details = self.event_details(&job).await;
        for pusher in pushers {
            let body = notification(&job, &pusher, unread, &details, self.include_content);
            self.deliver(&pusher, body).await;
        }
    }

    /// The sender's display name and the room's name, for the notification.
    async fn event_details(&self, job: &PushJob) -> (Option<String>, Option<String>) {
        let room = job.pdu.room_id.as_str();
        let name = |event: Option<crate::storage::rooms::StoredEvent>, field: &str| {
            event.and_then(|e| e.pdu.content_str(field))
        };
        let sender = self
            .storage
            .current_state_event(room, "m.room.member", job.pdu.sender.as_str())
            .await
            .ok()
            .flatten();
        let room_name = self
            .storage
            .current_state_event(room, "m.room.name", "")
            .await
            .ok()
            .flatten();
        (name(sender, "displayname"), name(room_name, "name"))
    }

    async fn deliver(&self, pusher: &PusherRow, body: Value) {
        let data: Value = serde_json::from_str(&pusher.data).unwrap_or_default();
        let Some(url) = data["url"]
            .as_str()
            .and_then(|u| reqwest::Url::parse(u).ok())
        else {
            return;
        };
        if !self.outbound.permits(&url) {
            tracing::warn!(%url, "push gateway refused: private address");
            return;
        }
        let mut delay = FIRST_RETRY;
        for attempt in 1..=ATTEMPTS {
            match self
                .outbound
                .client()
                .post(url.clone())
                .json(&body)
                .send()
                .await
            {
                Ok(response) if response.status().is_success() => {
                    let answer: Value = response.json().await.unwrap_or_default();
                    let rejected = answer["rejected"].as_array().is_some_and(|keys| {
                        keys.iter()
                            .any(|k| k.as_str() == Some(pusher.pushkey.as_str()))
                    });
                    if rejected {
                        tracing::info!(app_id = %pusher.app_id, "push gateway rejected the pushkey; pusher removed");
                        let _ = self
                            .storage
                            .delete_pusher(&pusher.user_id, &pusher.app_id, &pusher.pushkey)
                            .await;
                    }
                    return;
                }
                // A 4xx other than 429 will not get better by retrying.
                Ok(response)
                    if response.status().is_client_error()
                        && response.status() != http::StatusCode::TOO_MANY_REQUESTS =>
                {
                    tracing::warn!(%url, status = %response.status(), "push gateway refused the notification");
                    return;
                }
                outcome => {
                    let reason = match outcome {
                        Ok(response) => response.status().to_string(),
                        Err(err) => err.to_string(),
                    };
                    tracing::debug!(%url, attempt, %reason, "push attempt failed");
                }
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
        tracing::warn!(%url, "push gateway unreachable; notification dropped");
    }
}

/// The body of `POST /_matrix/push/v1/notify`.
fn notification(
    job: &PushJob,
    pusher: &PusherRow,
    unread: usize,
    (sender_name, room_name): &(Option<String>, Option<String>),
    include_content: bool,
) -> Value {
    let mut data: Value = serde_json::from_str(&pusher.data).unwrap_or_else(|_| json!({}));
    let event_id_only = data["format"].as_str() == Some("event_id_only");
    if let Some(data) = data.as_object_mut() {
        data.remove("url");
    }
    let actions: Vec<Value> = serde_json::from_str(&job.actions).unwrap_or_default();
    let tweaks: serde_json::Map<String, Value> = actions
        .iter()
        .filter_map(|a| {
            let tweak = a.get("set_tweak")?.as_str()?;
            Some((
                tweak.to_owned(),
                a.get("value").cloned().unwrap_or(Value::Bool(true)),
            ))
        })
        .collect();
    let device = json!({
        "app_id": pusher.app_id,
        "pushkey": pusher.pushkey,
        "data": data,
        "tweaks": tweaks,
    });
    let pdu = &job.pdu;
    let mut notification = json!({
        "event_id": pdu.event_id,
        "room_id": pdu.room_id,
        "counts": { "unread": unread },
        "devices": [device],
        "prio": if tweaks.contains_key("highlight") || tweaks.contains_key("sound") { "high" } else { "low" },
    });
    if !event_id_only {
        let object = notification.as_object_mut().expect("built as an object");
        object.insert("type".into(), pdu.kind.to_string().into());
        object.insert("sender".into(), pdu.sender.as_str().into());
        if let Some(name) = sender_name {
            object.insert("sender_display_name".into(), name.as_str().into());
        }
        if let Some(name) = room_name {
            object.insert("room_name".into(), name.as_str().into());
        }
        if pdu.state_key.as_deref() == Some(job.user_id.as_str()) {
            object.insert("user_is_target".into(), true.into());
        }
        if include_content {
            object.insert("content".into(), pdu.content_value());
        }
    }
    json!({ "notification": notification })
}
