//! The `http` grant: outbound requests to the hosts the operator listed.
//!
//! The host name is checked against `allowed_hosts`; the addresses it
//! resolves to are checked by the client's own resolver, so the connection
//! goes only to an address that passed the check (a `Host` header or a DNS
//! answer that changes between check and connect cannot steer it
//! elsewhere). IP literals, which skip the resolver, are checked directly.
//! Redirects are not followed.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::{
    bindings::myelin::plugin::types::{HostError, HttpRequest, HttpResponse},
    config::HttpGrant,
};

/// Whether an address is reachable from the public internet (not loopback,
/// private, link-local, shared, documentation or multicast space).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || (a == 100 && (64..128).contains(&b))
                || a == 0)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

/// Resolves names and drops the addresses that are not public, unless
/// private addresses are allowed or the address is in `also_allowed`.
/// Also used by the server's own outbound requests (pushers).
#[derive(Debug, Clone, Default)]
pub struct CheckedResolver {
    pub allow_private: bool,
    pub also_allowed: Vec<ipnet::IpNet>,
}

impl CheckedResolver {
    pub fn permits(&self, ip: IpAddr) -> bool {
        self.allow_private || is_public(ip) || self.also_allowed.iter().any(|net| net.contains(&ip))
    }
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let checker = self.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|addr| checker.permits(addr.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!("refused: {host} resolves to no public address").into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The client for the server's own outbound requests (push gateways,
/// identity servers): no redirects, no proxy, and no address that is not
/// public unless `also_allowed` lists it — host names checked by the
/// resolver, IP literals (which skip it) by [`Self::permits`].
#[derive(Clone)]
pub struct OutboundClient {
    client: reqwest::Client,
    resolver: CheckedResolver,
}

impl OutboundClient {
    pub fn new(also_allowed: Vec<ipnet::IpNet>, timeout: Duration) -> Self {
        let resolver = CheckedResolver {
            allow_private: false,
            also_allowed,
        };
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(resolver.clone()))
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .no_proxy()
            .build()
            .expect("the outbound client builds");
        Self { client, resolver }
    }

    /// Whether the URL may be requested: false for an IP literal that is
    /// not allowed.
    pub fn permits(&self, url: &reqwest::Url) -> bool {
        url.host_str()
            .and_then(|h| h.trim_matches(['[', ']']).parse::<IpAddr>().ok())
            .is_none_or(|ip| self.resolver.permits(ip))
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }
}

/// One plugin's HTTP client, configured from its grant.
pub struct HttpClient {
    grant: HttpGrant,
    client: reqwest::Client,
}

impl HttpClient {
    pub fn new(grant: &HttpGrant) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(CheckedResolver {
                allow_private: grant.allow_private_addresses,
                also_allowed: Vec::new(),
            }))
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_millis(grant.timeout_ms))
            .no_proxy()
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            grant: grant.clone(),
            client,
        })
    }

    pub async fn fetch(&self, request: HttpRequest) -> Result<HttpResponse, HostError> {
        let url = reqwest::Url::parse(&request.url)
            .map_err(|e| HostError::Failed(format!("invalid URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(HostError::Failed("only http and https URLs".to_owned()));
        }
        let host = url.host_str().unwrap_or_default().trim_matches(['[', ']']);
        if !self
            .grant
            .allowed_hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(host))
        {
            return Err(HostError::NotGranted);
        }
        if let Ok(ip) = host.parse::<IpAddr>()
            && !self.grant.allow_private_addresses
            && !is_public(ip)
        {
            return Err(HostError::Failed(format!(
                "refused: {ip} is not a public address"
            )));
        }
        let method = reqwest::Method::from_bytes(request.method.as_bytes())
            .map_err(|_| HostError::Failed(format!("invalid method {}", request.method)))?;
        let mut builder = self.client.request(method, url);
        for (name, value) in &request.headers {
            // The connection's host is the URL's, whatever a header says.
            if !name.eq_ignore_ascii_case("host") {
                builder = builder.header(name, value);
            }
        }
        if let Some(body) = request.body {
            builder = builder.body(body);
        }
        let mut response = builder
            .send()
            .await
            .map_err(|e| HostError::Failed(format!("{e:#}: {}", source_chain(&e))))?;
        let limit =
            usize::try_from(self.grant.max_response_kib.saturating_mul(1024)).unwrap_or(usize::MAX);
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| HostError::Failed(e.to_string()))?
        {
            if body.len() + chunk.len() > limit {
                return Err(HostError::Failed(format!(
                    "response over {} KiB",
                    self.grant.max_response_kib
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(HttpResponse {
            status: response.status().as_u16(),
            headers: response
                .headers()
                .iter()
                .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_owned())))
                .collect(),
            body,
        })
    }
}

/// The causes of a client error, which carry the resolver's refusal.
fn source_chain(err: &dyn std::error::Error) -> String {
    let mut out = String::new();
    let mut source = err.source();
    while let Some(cause) = source {
        out.push_str(&cause.to_string());
        out.push_str("; ");
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }
}
