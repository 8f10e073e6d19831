//! Capabilities a plugin gets only when the operator grants them. The host
//! implements the WIT `host` interface here; the server supplies the
//! backends (this crate knows no SQL).

use std::{future::Future, pin::Pin, sync::Arc};

use crate::{
    bindings::myelin::plugin::{
        host,
        types::{Event, HostError, HttpRequest, HttpResponse, UserProfile},
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
    fn is_joined<'a>(
        &'a self,
        user_id: &'a str,
        room_id: &'a str,
    ) -> BoxFuture<'a, Result<bool, String>>;
    fn is_admin<'a>(&'a self, user_id: &'a str) -> BoxFuture<'a, Result<bool, String>>;
}

/// The server's side of the grants, shared by every plugin.
#[derive(Clone, Default)]
pub struct HostServices {
    pub kv: Option<Arc<dyn KvBackend>>,
    pub queries: Option<Arc<dyn QueryBackend>>,
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

    /// The key-value backend and quota, if granted.
    fn kv(&self) -> Result<(&dyn KvBackend, u64), HostError> {
        match (&self.grants.kv, &self.services.kv) {
            (Some(grant), Some(backend)) => Ok((&**backend, grant.quota_kib.saturating_mul(1024))),
            _ => Err(HostError::NotGranted),
        }
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
}
