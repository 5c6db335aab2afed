//! Key sets behind `jwk_url`s: each is fetched before the gateway serves, then again every
//! `cache_duration` on a task of its own. A failed fetch is logged and keeps the keys the
//! validator had (none before the first success: tokens are then refused with 401).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::{EndpointProtections, Protections};

/// The largest key set read from a URL.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Fetches every URL-keyed validator's set once, then keeps them fresh in the background.
pub async fn load(protections: &Protections) {
    for endpoint in protections.url_keyed() {
        refresh(&endpoint).await;
        tokio::spawn(async move {
            let every = endpoint
                .jwt
                .as_ref()
                .and_then(|j| j.key_source())
                .map(|s| s.every);
            let Some(every) = every else { return };
            loop {
                tokio::time::sleep(every).await;
                refresh(&endpoint).await;
            }
        });
    }
}

async fn refresh(endpoint: &Arc<EndpointProtections>) {
    let Some(validator) = endpoint.jwt.as_ref() else {
        return;
    };
    let Some(source) = validator.key_source() else {
        return;
    };
    let fetched = tokio::time::timeout(FETCH_TIMEOUT, fetch(&source.url))
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {FETCH_TIMEOUT:?}")))
        .and_then(|text| validator.set_keys(&text));
    match fetched {
        Ok(count) => tracing::info!("[SERVICE: JWK] {}: {count} keys", source.url),
        Err(e) => tracing::error!("[SERVICE: JWK] {}: {e}", source.url),
    }
}

async fn fetch(url: &http::Uri) -> Result<String, String> {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let response = client.get(url.clone()).await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("answered {}", response.status()));
    }
    let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
        .collect()
        .await
        .map_err(|e| format!("reading the key set: {e}"))?
        .to_bytes();
    String::from_utf8(body.to_vec()).map_err(|_| "the key set is not UTF-8".to_owned())
}
