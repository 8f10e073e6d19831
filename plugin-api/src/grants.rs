//! Capabilities a plugin gets only when the operator grants them. The host
//! implements the WIT `host` interface here; the server supplies the
//! backends (this crate knows no SQL).

use std::{future::Future, pin::Pin, sync::Arc};

use crate::{
    bindings::myelin::plugin::{
        host,
        types::{ActionError, Event, HostError, HttpRequest, HttpResponse, Rejection, UserProfile},
    },
    config::Grants,
    http::HttpClient,
    plugin::InstanceState,
};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where plugins' key-value stores live, one namespace per plugin.
pub trait KvBackend: Send + Sync + 'static {
    fn get<'a>(
        &'a self,
        plugin: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, String>>;
    /// Stores the value unless the plugin's keys and values would then
    /// exceed `quota_bytes`; `Ok(false)` when over quota.
    fn set<'a>(
        &'a self,
        plugin: &'a str,
        key: &'a str,
        value: &'a [u8],
        quota_bytes: u64,
    ) -> BoxFuture<'a, Result<bool, String>>;
    fn delete<'a>(&'a self, plugin: &'a str, key: &'a str) -> BoxFuture<'a, Result<(), String>>;
    fn list<'a>(
        &'a self,
        plugin: &'a str,
        prefix: &'a str,
    ) -> BoxFuture<'a, Result<Vec<String>, String>>;
}

/// Read-only questions plugins may ask the server (grant `queries`).
pub trait QueryBackend: Send + Sync + 'static {
    fn profile<'a>(
        &'a self,
        user_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<UserProfile>, String>>;
    fn room_state<'a>(
        &'a self,
        room_id: &'a str,
        event_type: &'a str,
        state_key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Event>, String>>;
    fn room_state_events<'a>(
        &'a self,
        room_id: &'a str,
        event_type: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Event>, String>>;
    fn is_joined<'a>(
        &'a self,
        user_id: &'a str,
        room_id: &'a str,
    ) -> BoxFuture<'a, Result<bool, String>>;
    fn is_admin<'a>(&'a self, user_id: &'a str) -> BoxFuture<'a, Result<bool, String>>;
}

/// Why the server refused an action (the error the user would get), or
/// could not do it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionRefused {
    Refused { errcode: String, message: String },
    Failed(String),
}

/// Actions plugins may take on behalf of local users (grant `actions`),
/// through the same checks as the users' own requests.
pub trait ActionBackend: Send + Sync + 'static {
    fn update_room_membership<'a>(
        &'a self,
        sender: &'a str,
        target: &'a str,
        room_id: &'a str,
        membership: &'a str,
        content: Option<&'a str>,
    ) -> BoxFuture<'a, Result<String, ActionRefused>>;
    fn send_event<'a>(
        &'a self,
        sender: &'a str,
        room_id: &'a str,
        event_type: &'a str,
        state_key: Option<&'a str>,
        content: &'a str,
    ) -> BoxFuture<'a, Result<String, ActionRefused>>;
    fn get_account_data<'a>(
        &'a self,
        user_id: &'a str,
        room_id: Option<&'a str>,
        data_type: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, ActionRefused>>;
    fn set_account_data<'a>(
        &'a self,
        user_id: &'a str,
        room_id: Option<&'a str>,
        data_type: &'a str,
        content: &'a str,
    ) -> BoxFuture<'a, Result<(), ActionRefused>>;
    fn send_server_notice<'a>(
        &'a self,
        user_id: &'a str,
        content: &'a str,
    ) -> BoxFuture<'a, Result<String, ActionRefused>>;
}

/// The server's side of the grants, shared by every plugin.
#[derive(Clone, Default)]
pub struct HostServices {
    pub kv: Option<Arc<dyn KvBackend>>,
    pub queries: Option<Arc<dyn QueryBackend>>,
    pub actions: Option<Arc<dyn ActionBackend>>,
}

/// One instance's view: what its plugin was granted, and the backends.
#[derive(Clone)]
pub struct Granted {
    pub grants: Grants,
    pub services: HostServices,
    /// Built from the `http` grant, shared by the plugin's instances.
    pub http: Option<Arc<HttpClient>>,
}

impl Granted {
    fn queries(&self) -> Result<&dyn QueryBackend, HostError> {
        match (self.grants.queries, &self.services.queries) {
            (true, Some(backend)) => Ok(&**backend),
            _ => Err(HostError::NotGranted),
        }
    }

    fn actions(&self) -> Result<&dyn ActionBackend, ActionError> {
        match (self.grants.actions, &self.services.actions) {
            (true, Some(backend)) => Ok(&**backend),
            _ => Err(ActionError::NotGranted),
        }
    }

    /// The key-value backend and quota, if granted.
    fn kv(&self) -> Result<(&dyn KvBackend, u64), HostError> {
        match (&self.grants.kv, &self.services.kv) {
            (Some(grant), Some(backend)) => Ok((&**backend, grant.quota_kib.saturating_mul(1024))),
            _ => Err(HostError::NotGranted),
        }
    }
}

impl From<ActionRefused> for ActionError {
    fn from(refused: ActionRefused) -> Self {
        match refused {
            ActionRefused::Refused { errcode, message } => {
                Self::Refused(Rejection { errcode, message })
            }
            ActionRefused::Failed(message) => Self::Failed(message),
        }
    }
}

/// Runs an action within the plugin's call deadline: the guest cannot be
/// interrupted while the host works for it, so a host call that waits (e.g.
/// for the lock of a room whose event is being checked) is cut off here.
async fn act<T>(
    deadline: std::time::Duration,
    action: impl Future<Output = Result<T, ActionRefused>>,
) -> Result<T, ActionError> {
    match tokio::time::timeout(deadline, action).await {
        Ok(result) => result.map_err(ActionError::from),
        Err(_) => Err(ActionError::Failed(
            "the action did not finish within the plugin's deadline".into(),
        )),
    }
}

impl host::Host for InstanceState {
    async fn log(&mut self, level: crate::LogLevel, message: String) {
        self.write_log(level, &message);
    }

    async fn kv_get(&mut self, key: String) -> Result<Option<Vec<u8>>, HostError> {
        let (kv, _) = self.granted.kv()?;
        kv.get(&self.plugin, &key).await.map_err(HostError::Failed)
    }

    async fn kv_set(&mut self, key: String, value: Vec<u8>) -> Result<(), HostError> {
        let (kv, quota) = self.granted.kv()?;
        match kv.set(&self.plugin, &key, &value, quota).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(HostError::QuotaExceeded),
            Err(err) => Err(HostError::Failed(err)),
        }
    }

    async fn kv_delete(&mut self, key: String) -> Result<(), HostError> {
        let (kv, _) = self.granted.kv()?;
        kv.delete(&self.plugin, &key)
            .await
            .map_err(HostError::Failed)
    }

    async fn kv_list(&mut self, prefix: String) -> Result<Vec<String>, HostError> {
        let (kv, _) = self.granted.kv()?;
        kv.list(&self.plugin, &prefix)
            .await
            .map_err(HostError::Failed)
    }

    async fn get_profile(&mut self, user_id: String) -> Result<Option<UserProfile>, HostError> {
        let queries = self.granted.queries()?;
        queries.profile(&user_id).await.map_err(HostError::Failed)
    }

    async fn get_room_state(
        &mut self,
        room_id: String,
        event_type: String,
        state_key: String,
    ) -> Result<Option<Event>, HostError> {
        let queries = self.granted.queries()?;
        queries
            .room_state(&room_id, &event_type, &state_key)
            .await
            .map_err(HostError::Failed)
    }

    async fn get_room_state_events(
        &mut self,
        room_id: String,
        event_type: String,
    ) -> Result<Vec<Event>, HostError> {
        let queries = self.granted.queries()?;
        queries
            .room_state_events(&room_id, &event_type)
            .await
            .map_err(HostError::Failed)
    }

    async fn is_user_in_room(
        &mut self,
        user_id: String,
        room_id: String,
    ) -> Result<bool, HostError> {
        let queries = self.granted.queries()?;
        queries
            .is_joined(&user_id, &room_id)
            .await
            .map_err(HostError::Failed)
    }

    async fn is_server_admin(&mut self, user_id: String) -> Result<bool, HostError> {
        let queries = self.granted.queries()?;
        queries.is_admin(&user_id).await.map_err(HostError::Failed)
    }

    async fn http_fetch(&mut self, request: HttpRequest) -> Result<HttpResponse, HostError> {
        let client = self.granted.http.clone().ok_or(HostError::NotGranted)?;
        let url = request.url.clone();
        let result = client.fetch(request).await;
        if let Err(err) = &result {
            tracing::info!(target: "myelin::plugin", plugin = &*self.plugin, %url, error = ?err, "plugin HTTP request refused or failed");
        }
        result
    }

    async fn update_room_membership(
        &mut self,
        sender: String,
        target: String,
        room_id: String,
        membership: String,
        content: Option<String>,
    ) -> Result<String, ActionError> {
        let actions = self.granted.actions()?;
        act(
            self.deadline,
            actions.update_room_membership(
                &sender,
                &target,
                &room_id,
                &membership,
                content.as_deref(),
            ),
        )
        .await
    }

    async fn send_event(
        &mut self,
        sender: String,
        room_id: String,
        event_type: String,
        state_key: Option<String>,
        content: String,
    ) -> Result<String, ActionError> {
        let actions = self.granted.actions()?;
        act(
            self.deadline,
            actions.send_event(
                &sender,
                &room_id,
                &event_type,
                state_key.as_deref(),
                &content,
            ),
        )
        .await
    }

    async fn get_account_data(
        &mut self,
        user_id: String,
        room_id: Option<String>,
        data_type: String,
    ) -> Result<Option<String>, ActionError> {
        let actions = self.granted.actions()?;
        act(
            self.deadline,
            actions.get_account_data(&user_id, room_id.as_deref(), &data_type),
        )
        .await
    }

    async fn set_account_data(
        &mut self,
        user_id: String,
        room_id: Option<String>,
        data_type: String,
        content: String,
    ) -> Result<(), ActionError> {
        let actions = self.granted.actions()?;
        act(
            self.deadline,
            actions.set_account_data(&user_id, room_id.as_deref(), &data_type, &content),
        )
        .await
    }

    async fn send_server_notice(
        &mut self,
        user_id: String,
        content: String,
    ) -> Result<String, ActionError> {
        let actions = self.granted.actions()?;
        act(
            self.deadline,
            actions.send_server_notice(&user_id, &content),
        )
        .await
    }
}
