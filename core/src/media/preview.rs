//! URL previews (`preview_url`): the page is fetched by a client whose
//! resolver drops every address in `url_preview_ip_range_blacklist` (unless
//! `url_preview_ip_range_whitelist` lets it through), so the connection can
//! only go to an address that passed the check; IP literals, which skip the
//! resolver, are checked directly, on redirects too. Bodies are capped at
//! `max_spider_size`. The Open Graph fields of an HTML page (with `<title>`
//! and the description meta as fallbacks) are returned; its `og:image`, or
//! the URL itself when it is an image, is stored as local media. Answers
//! are cached in memory for an hour, as Synapse does.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use html5gum::{DefaultEmitter, Token, Tokenizer};
use parking_lot::Mutex;
use reqwest::{
    Url,
    dns::{Addrs, Name, Resolve, Resolving},
    redirect,
};
use serde_json::{Map, Value};

use super::Media;
use crate::{config::Config, storage::Storage};

const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_REDIRECTS: usize = 5;
const CACHE_FOR: Duration = Duration::from_secs(3600);
const CACHE_ENTRIES: usize = 1000;

/// Which addresses the spider may connect to.
#[derive(Debug)]
struct IpPolicy {
    blacklist: Vec<ipnet::IpNet>,
    whitelist: Vec<ipnet::IpNet>,
}

impl IpPolicy {
    fn permits(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.whitelist.iter().any(|net| net.contains(&ip))
            || !self.blacklist.iter().any(|net| net.contains(&ip))
    }

    /// The host's address when it is an IP literal the policy refuses.
    fn refuses_literal(&self, url: &Url) -> Option<IpAddr> {
        let host = url.host_str()?.trim_matches(['[', ']']);
        let ip: IpAddr = host.parse().ok()?;
        (!self.permits(ip)).then_some(ip)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0} resolves to no address the URL preview spider may reach")]
struct NoPermittedAddress(String);

#[derive(Debug, thiserror::Error)]
#[error("IP address blocked")]
struct BlockedAddress;

struct PolicyResolver(Arc<IpPolicy>);

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|addr| policy.permits(addr.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(Box::new(NoPermittedAddress(host)) as _);
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Why a preview could not be made; each maps to Synapse's answer.
#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error("Invalid URL: {0}")]
    BadUrl(String),
    /// An IP literal in the blacklist: 403, as Synapse.
    #[error("IP address blocked")]
    Blocked,
    /// No address of the host may be reached: 502, as Synapse.
    #[error("DNS resolution failure during URL preview generation")]
    Unresolvable,
    #[error("Requested file is too large > {0} bytes")]
    TooLarge(u64),
    #[error("{0}")]
    Upstream(String),
    #[error("could not store the preview's image: {0}")]
    Internal(String),
}

/// A preview: Open Graph properties and Matrix's additions.
pub type OpenGraph = Map<String, Value>;

pub struct UrlPreviewer {
    client: reqwest::Client,
    policy: Arc<IpPolicy>,
    max_size: u64,
    /// Previews by URL, with when they were made.
    cache: Mutex<HashMap<String, (Instant, OpenGraph)>>,
}

impl UrlPreviewer {
    /// The previewer, when `url_preview_enabled` is on.
    pub fn from_config(config: &Config) -> Option<Self> {
        if !config.url_preview_enabled {
            return None;
        }
        let mut blacklist = config.url_preview_ip_range_blacklist.clone()?;
        // Unroutable; Synapse always refuses them.
        blacklist.extend(
            ["0.0.0.0/32", "::/128"].map(|n| n.parse::<ipnet::IpNet>().expect("valid range")),
        );
        let policy = Arc::new(IpPolicy {
            blacklist,
            whitelist: config.url_preview_ip_range_whitelist.clone(),
        });
        let redirect_policy = policy.clone();
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(PolicyResolver(policy.clone())))
            .redirect(redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= MAX_REDIRECTS {
                    attempt.error("too many redirects")
                } else if redirect_policy.refuses_literal(attempt.url()).is_some() {
                    attempt.error(BlockedAddress)
                } else {
                    attempt.follow()
                }
            }))
            .timeout(FETCH_TIMEOUT)
            .user_agent("Myelin (bot; URL preview)")
            .no_proxy()
            .build()
            .expect("the preview client builds");
        Some(Self {
            client,
            policy,
            max_size: config.max_spider_size.0,
            cache: Mutex::default(),
        })
    }

    /// The Open Graph description of `url`, for `user_id`.
    pub async fn preview(
        &self,
        media: &Media,
        storage: &Storage,
        config: &Config,
        user_id: &str,
        url: &str,
    ) -> Result<Map<String, Value>, PreviewError> {
        if let Some((at, og)) = self.cache.lock().get(url)
            && at.elapsed() < CACHE_FOR
        {
            return Ok(og.clone());
        }
        let parsed = Url::parse(url).map_err(|e| PreviewError::BadUrl(e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(PreviewError::BadUrl("only http and https URLs".to_owned()));
        }
        let page = self.fetch(parsed).await?;
        let og = if page.content_type.starts_with("image/") {
            let mut og = Map::new();
            self.store_image(media, storage, config, user_id, page, &mut og)
                .await?;
            og
        } else if is_html(&page.content_type) {
            let mut og = parse_html(&page.body);
            if let Some(image) = og.remove("og:image") {
                self.add_image(media, storage, config, user_id, &page.url, &image, &mut og)
                    .await;
            }
            og
        } else {
            return Err(PreviewError::Upstream(
                "Requested file's content type not allowed for this operation".to_owned(),
            ));
        };
        let mut cache = self.cache.lock();
        if cache.len() >= CACHE_ENTRIES {
            cache.retain(|_, (at, _)| at.elapsed() < CACHE_FOR);
            if cache.len() >= CACHE_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(url.to_owned(), (Instant::now(), og.clone()));
        Ok(og)
    }

    /// Fetches `og:image` and, if it is an image, stores it and describes it;
    /// an image that cannot be had leaves the preview without one.
    #[allow(clippy::too_many_arguments)]
    async fn add_image(
        &self,
        media: &Media,
        storage: &Storage,
        config: &Config,
        user_id: &str,
        page_url: &Url,
        image: &Value,
        og: &mut Map<String, Value>,
    ) {
        let Some(url) = image.as_str().and_then(|u| page_url.join(u).ok()) else {
            return;
        };
        let fetched = match self.fetch(url.clone()).await {
            Ok(fetched) if fetched.content_type.starts_with("image/") => fetched,
            Ok(_) => return,
            Err(err) => {
                tracing::debug!(%url, error = %err, "preview image not fetched");
                return;
            }
        };
        if let Err(err) = self
            .store_image(media, storage, config, user_id, fetched, og)
            .await
        {
            tracing::warn!(%url, error = %err, "preview image not stored");
        }
    }

    async fn store_image(
        &self,
        media: &Media,
        storage: &Storage,
        config: &Config,
        user_id: &str,
        fetched: Fetched,
        og: &mut Map<String, Value>,
    ) -> Result<(), PreviewError> {
        let internal = |e: &dyn std::fmt::Display| PreviewError::Internal(e.to_string());
        // Through the same path as uploads: a temporary file, then the store.
        let chunks = futures_util::stream::iter([Ok::<_, std::io::Error>(fetched.body.clone())]);
        let received = media
            .files
            .receive(chunks, self.max_size, 0)
            .await
            .map_err(|e| internal(&e))?;
        let upload = super::Upload {
            content_type: fetched.content_type.clone(),
            upload_name: None,
        };
        let media_id = media
            .store(storage, config, user_id, upload, received)
            .await
            .map_err(|e| internal(&e))?;
        og.insert(
            "og:image".into(),
            format!("mxc://{}/{media_id}", config.server_name).into(),
        );
        og.insert("og:image:type".into(), fetched.content_type.into());
        og.insert("matrix:image:size".into(), fetched.body.len().into());
        if let Some((w, h)) = image_dimensions(&fetched.body) {
            og.insert("og:image:width".into(), w.into());
            og.insert("og:image:height".into(), h.into());
        }
        Ok(())
    }

    /// GETs `url` through the checked client, at most `max_size` bytes.
    async fn fetch(&self, url: Url) -> Result<Fetched, PreviewError> {
        if self.policy.refuses_literal(&url).is_some() {
            return Err(PreviewError::Blocked);
        }
        let mut response = self.client.get(url).send().await.map_err(fetch_error)?;
        if !response.status().is_success() {
            return Err(PreviewError::Upstream(format!(
                "Got error {}",
                response.status().as_u16()
            )));
        }
        if response
            .content_length()
            .is_some_and(|len| len > self.max_size)
        {
            return Err(PreviewError::TooLarge(self.max_size));
        }
        let content_type = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/octet-stream")
            .to_owned();
        let url = response.url().clone();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(fetch_error)? {
            if (body.len() + chunk.len()) as u64 > self.max_size {
                return Err(PreviewError::TooLarge(self.max_size));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Fetched {
            url,
            content_type,
            body: Bytes::from(body),
        })
    }
}

struct Fetched {
    /// Where the body came from, after redirects.
    url: Url,
    content_type: String,
    body: Bytes,
}

/// A failed fetch, told apart by the refusals our resolver and redirect
/// policy put in the error's causes.
fn fetch_error(err: reqwest::Error) -> PreviewError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(cause) = source {
        if cause.is::<BlockedAddress>() {
            return PreviewError::Blocked;
        }
        if cause.is::<NoPermittedAddress>() {
            return PreviewError::Unresolvable;
        }
        source = cause.source();
    }
    if err.is_timeout() {
        return PreviewError::Upstream("Timed out fetching the URL".to_owned());
    }
    PreviewError::Upstream(format!("Failed to download content: {err}"))
}

fn is_html(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("text/html")
        || essence.eq_ignore_ascii_case("application/xhtml+xml")
}

fn image_dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .ok()?
        .into_dimensions()
        .ok()
}

/// The `og:*` meta properties of a page, first value winning, with
/// `<title>` and `<meta name="description">` standing in for a missing
/// `og:title` and `og:description`.
pub fn parse_html(html: &[u8]) -> Map<String, Value> {
    let mut emitter = DefaultEmitter::default();
    // Switch to raw text inside <script>, <style>, <title>…, as a browser's
    // tree builder would, so that markup in scripts is not read as tags.
    emitter.naively_switch_states(true);
    let mut og = Map::new();
    let mut title: Option<String> = None;
    let mut in_title = false;
    let mut description: Option<String> = None;
    for token in Tokenizer::new_with_emitter(html, emitter).flatten() {
        match token {
            Token::StartTag(tag) if tag.name.as_slice() == b"title" => {
                in_title = title.is_none();
                if in_title {
                    title = Some(String::new());
                }
            }
            Token::EndTag(tag) if tag.name.as_slice() == b"title" => in_title = false,
            Token::String(text) if in_title => {
                if let Some(title) = &mut title {
                    title.push_str(&String::from_utf8_lossy(&text.value));
                }
            }
            Token::StartTag(tag) if tag.name.as_slice() == b"meta" => {
                let attr = |name: &str| {
                    tag.attributes
                        .get(name.as_bytes())
                        .map(|v| String::from_utf8_lossy(&v.value).into_owned())
                };
                let Some(content) = attr("content") else {
                    continue;
                };
                let key = attr("property")
                    .or_else(|| attr("name"))
                    .unwrap_or_default();
                if key.starts_with("og:") {
                    og.entry(key).or_insert(Value::String(content));
                } else if key.eq_ignore_ascii_case("description") && description.is_none() {
                    description = Some(content);
                }
            }
            _ => {}
        }
    }
    if !og.contains_key("og:title")
        && let Some(title) = title.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty())
    {
        og.insert("og:title".into(), title.into());
    }
    if !og.contains_key("og:description")
        && let Some(description) = description
    {
        og.insert("og:description".into(), description.into());
    }
    og
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_graph_fields_and_fallbacks() {
        let og = parse_html(
            br#"<html><head><title>Plain &amp; simple</title>
            <script>var s = "<meta property='og:title' content='fake'>";</script>
            <meta property="og:description" content="Described">
            <meta property="og:description" content="Second">
            <meta name="description" content="ignored">
            <meta property="og:image" content="/a.png"></head></html>"#,
        );
        assert_eq!(og["og:title"], "Plain & simple");
        assert_eq!(og["og:description"], "Described");
        assert_eq!(og["og:image"], "/a.png");
    }

    #[test]
    fn the_whitelist_overrides_the_blacklist() {
        let policy = IpPolicy {
            blacklist: vec!["127.0.0.0/8".parse().unwrap(), "::/128".parse().unwrap()],
            whitelist: vec!["127.0.0.2/32".parse().unwrap()],
        };
        assert!(!policy.permits("127.0.0.1".parse().unwrap()));
        assert!(!policy.permits("::ffff:127.0.0.1".parse().unwrap()));
        assert!(policy.permits("127.0.0.2".parse().unwrap()));
        assert!(policy.permits("93.184.216.34".parse().unwrap()));
        let url = Url::parse("http://[::]:8080/").unwrap();
        assert!(policy.refuses_literal(&url).is_some());
    }
}
