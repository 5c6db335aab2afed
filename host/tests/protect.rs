//! Protections that survive the hijack: CORS, JWT and rate limits run on the request head
//! before the plugin takes the connection, and CORS headers reach the client on the stream.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};
use testkit::{body_of, gateway, origin, page_server, Gateway, Process, RawClient, TempPath};

const SECRET: &[u8] = b"a test secret that is long enough";

/// A gateway streaming /sse/{id} through the plugin, with the endpoint declared in
/// `endpoints[]` (no-op to the same origin) carrying `extra_config`, and `root_extra`
/// merged into the root `extra_config`.
fn protected(endpoint_extra: Value, root_extra: Value) -> (Gateway, Process, TempPath) {
    let origin = origin().interval_ms(50).run();
    let jwks = jwks_file();
    let endpoint_extra = serde_json::from_str::<Value>(
        &endpoint_extra
            .to_string()
            .replace("JWKS", jwks.path().to_str().unwrap()),
    )
    .unwrap();
    let mut builder = gateway()
        .streaming("/sse/{id}", "/events-stream/{id}", &origin.url())
        .endpoint(json!({
            "endpoint": "/sse/{id}", "output_encoding": "no-op",
            "backend": [{"host": [origin.url()], "url_pattern": "/events-stream/{id}"}],
            "extra_config": endpoint_extra,
        }));
    for (key, value) in root_extra.as_object().unwrap() {
        builder = builder.root_extra(key, value.clone());
    }
    (builder.run(), origin, jwks)
}

/// The JWK set: one symmetric key (HS256), base64url of SECRET.
fn jwks_file() -> TempPath {
    TempPath::write(
        "jwks",
        &json!({"keys": [{"kty": "oct", "kid": "k1", "alg": "HS256", "k": base64url(SECRET)}]})
            .to_string(),
    )
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, &b| n << 8 | u32::from(b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn token(roles: &[&str], expires_in_secs: i64, secret: &[u8]) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("k1".into());
    let claims = json!({"sub": "ann", "roles": roles, "exp": now + expires_in_secs});
    encode(&header, &claims, &EncodingKey::from_secret(secret)).unwrap()
}

async fn status_of(gateway: &Gateway, headers: &[&str]) -> (u16, String) {
    status_at(gateway, "/sse/a", headers).await
}

/// The status and head of `GET path`.
async fn status_at(gateway: &Gateway, path: &str, headers: &[&str]) -> (u16, String) {
    let mut client = RawClient::get(gateway.addr, path, headers).await;
    let head = client.read_until(b"\r\n\r\n").await;
    let text = String::from_utf8_lossy(head).into_owned();
    let status = text[9..12].parse().unwrap();
    (status, text)
}

#[tokio::test]
async fn a_stream_behind_jwt_needs_a_valid_token_with_a_role() {
    let (gateway, _origin, _jwks) = protected(
        json!({"auth/validator": {"alg": "HS256", "jwk_local_path": "JWKS", "roles": ["reader"], "cookie_key": "session"}}),
        json!({}),
    );
    let good = token(&["reader"], 3600, SECRET);
    let cases = [
        (vec![], 401),
        (
            vec![format!(
                "Authorization: Bearer {}",
                token(&["reader"], 3600, b"another secret entirely!!")
            )],
            401,
        ),
        (
            vec![format!(
                "Authorization: Bearer {}",
                token(&["reader"], -3600, SECRET)
            )],
            401,
        ),
        (
            vec![format!(
                "Authorization: Bearer {}",
                token(&["writer"], 3600, SECRET)
            )],
            403,
        ),
        (vec![format!("Authorization: Bearer {good}")], 200),
        (vec![format!("Cookie: theme=dark; session={good}")], 200),
    ];
    for (headers, expected) in cases {
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        let (status, head) = status_of(&gateway, &headers).await;
        assert_eq!(status, expected, "{headers:?}:\n{head}");
        if expected == 200 {
            assert!(head.contains("Content-Type: text/event-stream"), "{head}");
        }
    }
    gateway.process.wait_for_log("connection handed over");
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn signed(claims: &Value) -> String {
    let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("k1".into());
    encode(&header, claims, &EncodingKey::from_secret(SECRET)).unwrap()
}

#[tokio::test]
async fn every_claim_is_checked_and_a_refusal_names_no_internals() {
    let (gateway, _origin, _jwks) = protected(
        json!({"auth/validator": {"alg": "HS256", "jwk_local_path": "JWKS",
            "audience": ["api"], "issuer": "https://idp", "leeway": "5s"}}),
        json!({}),
    );
    let exp = now() + 3600;
    let good = json!({"aud": "api", "iss": "https://idp", "exp": exp});
    let without = |claim: &str| {
        let mut claims = good.clone();
        claims.as_object_mut().unwrap().remove(claim);
        claims
    };
    let with = |claim: &str, value: Value| {
        let mut claims = good.clone();
        claims[claim] = value;
        claims
    };
    let cases = [
        (good.clone(), 200),
        (without("aud"), 401),
        (without("iss"), 401),
        (with("nbf", json!(now() + 600)), 401),
        (with("iat", json!(now() + 600)), 401),
        (with("exp", json!(now() - 60)), 401),
        (with("nbf", json!(now() - 60)), 200),
    ];
    for (claims, expected) in cases {
        let authorization = format!("Authorization: Bearer {}", signed(&claims));
        let (status, head) = status_of(&gateway, &[&authorization]).await;
        assert_eq!(status, expected, "{claims}:\n{head}");
    }
    // What a refused client reads: that its token is invalid, not why.
    let authorization = format!("Authorization: Bearer {}", signed(&without("iss")));
    let refused = RawClient::get(gateway.addr, "/sse/a", &[&authorization])
        .await
        .read_to_end()
        .await;
    assert_eq!(body_of(&refused), b"invalid token\n");
    gateway
        .process
        .wait_for_log("[JWT] 127.0.0.1: invalid token: Missing required claim: iss");
}

/// The route-order bypass: a public `/{a}/{b}` listed before the protected `/sse/{id}`
/// took `/sse/1` for the protections (and the pipeline), while the plugin served it.
#[tokio::test]
async fn a_public_endpoint_listed_first_does_not_unprotect_a_more_specific_one() {
    let origin = origin().interval_ms(50).run();
    let jwks = jwks_file();
    let with_endpoints = |builder: testkit::GatewayBuilder| {
        builder
            .endpoint(json!({"endpoint": "/{a}/{b}", "output_encoding": "no-op",
                "backend": [{"host": [origin.url()], "url_pattern": "/events-stream/{b}"}]}))
            .endpoint(json!({"endpoint": "/sse/{id}", "output_encoding": "no-op",
                "backend": [{"host": [origin.url()], "url_pattern": "/events-stream/{id}"}],
                "extra_config": {"auth/validator": {"alg": "HS256", "jwk_local_path": jwks.path()}}}))
    };
    let through_the_plugin =
        with_endpoints(gateway().streaming("/sse/{id}", "/events-stream/{id}", &origin.url()))
            .run();
    let through_the_pipeline = with_endpoints(gateway()).run();
    let good = format!("Authorization: Bearer {}", token(&[], 3600, SECRET));
    for gateway in [&through_the_plugin, &through_the_pipeline] {
        // Other spellings of the protected path are the same path to the origin.
        for path in ["/sse/1", "/%73se/1", "/ss%65/1", "http://gw/sse/1"] {
            let (status, head) = status_at(gateway, path, &[]).await;
            assert_eq!(status, 401, "{path} without a token:\n{head}");
            let (status, head) = status_at(gateway, path, &[&good]).await;
            assert_eq!(status, 200, "{path} with a token:\n{head}");
            assert!(head.contains("text/event-stream"), "{head}");
        }
        let (status, head) = status_at(gateway, "/public/1", &[]).await;
        assert_eq!(
            status, 200,
            "the public endpoint still serves its paths:\n{head}"
        );
        // A head the gate decides (public) but hyper refuses (a backtick in the target)
        // ends the connection: its decision cannot serve the protected request behind it.
        let response = RawClient::exchange(
            gateway.addr,
            b"GET /public/a`b HTTP/1.1\r\nHost: x\r\n\r\nGET /sse/1 HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .await;
        let text = String::from_utf8_lossy(&response);
        assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
        assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{text}");
    }
    through_the_plugin
        .process
        .wait_for_log("GET /%73se/1 from 127.0.0.1");
    let log = through_the_plugin.process.log();
    assert!(log.contains("connection handed over"), "{log}");
    assert!(
        !through_the_pipeline.process.log().contains("handed over"),
        "no plugin there"
    );
}

/// The host tells the plugin when the token stops being valid (`exp` + `leeway`), and the
/// stream ends then, at an event boundary, instead of streaming on under a dead token.
#[tokio::test]
async fn a_stream_ends_when_its_token_expires() {
    let (gateway, _origin, _jwks) = protected(
        json!({"auth/validator": {"alg": "HS256", "jwk_local_path": "JWKS", "leeway": "0s"}}),
        json!({}),
    );
    let expiring = format!("Authorization: Bearer {}", token(&[], 2, SECRET));
    let client = RawClient::get(gateway.addr, "/sse/a", &[&expiring]).await;
    // The origin sends an event every 50 ms: the stream would go on without the expiry.
    let response = client.read_to_end().await;
    let body = String::from_utf8_lossy(body_of(&response)).into_owned();
    assert!(body.contains("id: 3\n"), "it streamed first: {body}");
    assert!(body.ends_with("\n\n"), "cut inside an event: {body:?}");
    assert_eq!(
        gateway.route_stats("/sse/{id}").await["drops"]["token_expired"],
        1
    );
    gateway
        .process
        .wait_for_log("GET /sse/a 200 stream ended (the token expired)");
}

#[tokio::test]
async fn cors_preflights_are_answered_and_streams_carry_the_headers() {
    let (gateway, _origin, _jwks) = protected(
        json!({}),
        json!({"security/cors": {"allow_origins": ["https://app.example"], "allow_headers": ["Last-Event-ID"], "allow_credentials": true, "max_age": "1h"}}),
    );
    let answer = RawClient::exchange(gateway.addr, b"OPTIONS /sse/a HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\nAccess-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: last-event-id\r\nConnection: close\r\n\r\n").await;
    let answer = String::from_utf8(answer).unwrap();
    for expected in [
        "HTTP/1.1 204 ",
        "access-control-allow-origin: https://app.example\r\n",
        "access-control-allow-credentials: true\r\n",
        "access-control-allow-headers: last-event-id\r\n",
        "access-control-max-age: 3600\r\n",
    ] {
        assert!(
            answer
                .to_ascii_lowercase()
                .contains(&expected.to_ascii_lowercase()),
            "{expected:?} in {answer}"
        );
    }

    gateway.process.wait_for_log("OPTIONS /sse/a 204 ");
    let (status, head) = status_of(&gateway, &["Origin: https://app.example"]).await;
    assert_eq!(status, 200, "{head}");
    assert!(
        head.contains("Content-Type: text/event-stream"),
        "the plugin served it: {head}"
    );
    assert!(
        head.contains("Access-Control-Allow-Origin: https://app.example\r\n"),
        "{head}"
    );
    assert!(
        head.contains("Access-Control-Allow-Credentials: true\r\n"),
        "{head}"
    );

    let (_, head) = status_of(&gateway, &["Origin: https://evil.example"]).await;
    assert!(!head.contains("Access-Control-Allow-Origin"), "{head}");
}

#[tokio::test]
async fn a_null_origin_is_not_reflected_and_any_origin_with_credentials_is_warned_about() {
    let any_with_credentials =
        json!({"security/cors": {"allow_origins": ["*"], "allow_credentials": true}});
    let (gateway, _origin, _jwks) = protected(json!({}), any_with_credentials.clone());
    // A sandboxed iframe (or any page that makes itself one) sends `Origin: null`.
    let (status, head) = status_of(&gateway, &["Origin: null"]).await;
    assert_eq!(status, 200, "{head}");
    assert!(!head.contains("Access-Control-Allow"), "{head}");
    let (_, head) = status_of(&gateway, &["Origin: https://any.example"]).await;
    assert!(
        head.contains("Access-Control-Allow-Origin: https://any.example\r\n"),
        "{head}"
    );
    let warning = r#"security/cors: allow_origins ["*"] with allow_credentials reflects every origin with credentials"#;
    gateway.process.wait_for_log(warning);

    let (ok, out) = testkit::gateway()
        .root_extra(
            "security/cors",
            any_with_credentials["security/cors"].clone(),
        )
        .check();
    assert!(ok, "a warning, not an error: {out}");
    let warnings: Vec<&str> = out.lines().filter(|l| l.starts_with("WARNING")).collect();
    assert_eq!(warnings.len(), 1, "{out}");
    assert!(
        warnings[0].starts_with(&format!("WARNING: {warning}")),
        "{out}"
    );
    assert!(out.ends_with("Syntax OK!\n"), "{out}");

    let listed = json!({"security/cors": {"allow_origins": ["null"], "allow_credentials": true}});
    let (gateway, _origin, _jwks) = protected(json!({}), listed);
    let (_, head) = status_of(&gateway, &["Origin: null"]).await;
    assert!(
        head.contains("Access-Control-Allow-Origin: null\r\n"),
        "{head}"
    );
}

#[tokio::test]
async fn rate_limits_count_stream_connections() {
    let (gateway, _origin, _jwks) = protected(
        json!({"qos/ratelimit/router": {"client_max_rate": 2, "every": "1h"}}),
        json!({}),
    );
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut client = RawClient::get(gateway.addr, "/sse/r", &[]).await;
        client.read_until(b"id: 1\n").await;
        open.push(client);
    }
    let refused = RawClient::get(gateway.addr, "/sse/r", &[])
        .await
        .read_to_end()
        .await;
    let refused = String::from_utf8_lossy(&refused);
    assert!(refused.starts_with("HTTP/1.1 429 "), "{refused}");
    assert_eq!(body_of(refused.as_bytes()), b"client rate limit exceeded\n");
}

#[tokio::test]
async fn health_answers_while_serving() {
    let (gateway, _origin, _jwks) = protected(json!({}), json!({}));
    let response = RawClient::exchange(
        gateway.addr,
        b"GET /__health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with(b"HTTP/1.1 200 OK\r\n"));
    assert_eq!(body_of(&response), br#"{"status":"ok"}"#);
}

// Multi-threaded: the key server answers while this thread waits for the gateway's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_can_come_from_a_jwk_url() {
    let origin = origin().interval_ms(50).run();
    let jwks =
        json!({"keys": [{"kty": "oct", "kid": "k1", "alg": "HS256", "k": base64url(SECRET)}]});
    let jwks_server = page_server(jwks.to_string()).await;
    let gateway = gateway()
        .streaming("/sse/{id}", "/events-stream/{id}", &origin.url())
        .endpoint(json!({
            "endpoint": "/sse/{id}", "output_encoding": "no-op",
            "backend": [{"host": [origin.url()], "url_pattern": "/events-stream/{id}"}],
            "extra_config": {"auth/validator": {"alg": "HS256", "jwk_url": format!("http://{jwks_server}/jwks.json"), "cache": true}},
        }))
        .run();
    gateway.process.wait_for_log("[SERVICE: JWK] http://");
    assert!(gateway.process.log().contains("/jwks.json: 1 keys"));
    let good = format!("Authorization: Bearer {}", token(&[], 3600, SECRET));
    assert_eq!(status_of(&gateway, &[&good]).await.0, 200);
    let bad = format!(
        "Authorization: Bearer {}",
        token(&[], 3600, b"another secret entirely!!")
    );
    assert_eq!(status_of(&gateway, &[&bad]).await.0, 401);
}
