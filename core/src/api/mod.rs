//! HTTP APIs, laid out like the spec: `client` (client-server API),
//! `media` (the content repository) and `admin` (Synapse-compatible admin
//! endpoints).

pub mod admin;
pub mod client;
pub mod error;
pub mod json;
pub mod media;
pub mod plugin_actions;
pub mod plugin_hooks;
pub mod plugins;
pub mod ruma;

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Instant,
};

use axum::{
    Router,
    extract::Request,
    handler::Handler,
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{MethodFilter, on},
};
use http::{HeaderValue, Method, StatusCode, header};
use tracing::Instrument;

use self::error::MatrixError;
use crate::{config::Resource, state::AppState};
use ::ruma::api::{IncomingRequest, path_builder::PathBuilder};

/// Registers a handler for a ruma endpoint on every path the spec has had for it.
pub trait RumaRouter {
    fn endpoint<Req: IncomingRequest, H: Handler<X, AppState>, X: 'static>(
        self,
        handler: H,
    ) -> Self;
}

impl RumaRouter for Router<AppState> {
    fn endpoint<Req: IncomingRequest, H: Handler<X, AppState>, X: 'static>(
        mut self,
        handler: H,
    ) -> Self {
        let method =
            MethodFilter::try_from(Req::METHOD).expect("ruma endpoints use standard methods");
        for path in Req::PATH_BUILDER.all_paths() {
            self = self.route(path, on(method, handler.clone()));
            // An empty state key leaves the last segment empty
            // (`/state/m.room.name/`) or absent; ruma reads both as "".
            if let Some(prefix) = path.strip_suffix("/{state_key}") {
                self = self
                    .route(prefix, on(method, handler.clone()))
                    .route(&format!("{prefix}/"), on(method, handler.clone()));
            }
        }
        self
    }
}

/// The router for one listener, serving the resources it names.
pub fn router(state: AppState, resources: &[Resource]) -> Router {
    let mut router = Router::new();
    if resources.contains(&Resource::Client) {
        router = router.merge(client::router()).merge(admin::router());
    }
    if resources.contains(&Resource::Client) || resources.contains(&Resource::Media) {
        router = router.merge(media::router());
    }
    if resources.contains(&Resource::Metrics) && state.config.enable_metrics {
        router = router.route("/_synapse/metrics", axum::routing::get(metrics));
    }
    router
        .fallback(|| async { MatrixError::unrecognized(StatusCode::NOT_FOUND) })
        .method_not_allowed_fallback(|| async {
            MatrixError::unrecognized(StatusCode::METHOD_NOT_ALLOWED)
        })
        .layer(middleware::from_fn(cors))
        .layer(middleware::from_fn(request_span))
        .with_state(state)
}

/// Prometheus metrics, in the text format (Synapse's path).
async fn metrics(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    let mut body = String::new();
    state.plugins.current().render_metrics(&mut body);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// Every request runs in a span with an ID; its outcome is logged once.
async fn request_span(request: Request, next: Next) -> Response {
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let method = request.method().clone();
    // The path only: query strings may carry access tokens.
    let path = request.uri().path().to_owned();
    let span = tracing::info_span!("request", id = %format_args!("{method}-{id}"));
    let started = Instant::now();
    async move {
        let response = next.run(request).await;
        tracing::info!(
            %method,
            %path,
            status = response.status().as_u16(),
            duration_ms = format_args!("{:.3}", started.elapsed().as_secs_f64() * 1e3),
            "handled request"
        );
        response
    }
    .instrument(span)
    .await
}

/// CORS as the client-server API asks: any origin, the spec's methods and
/// headers; pre-flight `OPTIONS` requests are answered here.
async fn cors(request: Request, next: Next) -> Response {
    let mut response = if request.method() == Method::OPTIONS {
        StatusCode::OK.into_response()
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, PUT, DELETE, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("X-Requested-With, Content-Type, Authorization"),
    );
    response
}
