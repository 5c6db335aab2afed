//! The KrakenD pipeline for normal endpoints: several backends merged, partial answers,
//! response shaping, and what reaches the backends.

use serde_json::{json, Value};
use testkit::{body_of, gateway, json_backend, Gateway, RawClient, ScriptedOrigin};

async fn get(gateway: &Gateway, path_and_headers: &str) -> (String, Value) {
    let request = format!("GET {path_and_headers}Host: x\r\nConnection: close\r\n\r\n");
    let response = RawClient::exchange(gateway.addr, request).await;
    let head = String::from_utf8_lossy(&response[..response.len() - body_of(&response).len()])
        .into_owned();
    let body = serde_json::from_slice(body_of(&response)).unwrap_or(Value::Null);
    (head, body)
}

#[tokio::test]
async fn backends_are_merged_and_a_failing_one_makes_the_answer_partial() {
    let users = json_backend(200, r#"{"data": {"name": "ann", "password": "x"}, "n": 1}"#).await;
    let orders = json_backend(200, r#"[{"id": 7}]"#).await;
    let broken = json_backend(500, r#"{"error": true}"#).await;
    let backend = |addr: std::net::SocketAddr, extra: Value| {
        let mut b = json!({"host": [format!("http://{addr}")], "url_pattern": "/x"});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let gateway = gateway()
        .endpoint(json!({"endpoint": "/all", "backend": [
            backend(users, json!({"target": "data", "deny": ["password"], "mapping": {"name": "user"}})),
            backend(orders, json!({"group": "orders"})),
        ]}))
        .endpoint(json!({"endpoint": "/partial", "backend": [backend(users, json!({"allow": ["n"]})), backend(broken, json!({}))]}))
        .endpoint(json!({"endpoint": "/none", "backend": [backend(broken, json!({}))]}))
        .run();

    let (head, body) = get(&gateway, "/all HTTP/1.1\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("x-krakend-completed: true"),
        "{head}"
    );
    assert_eq!(
        body,
        json!({"user": "ann", "orders": {"collection": [{"id": 7}]}})
    );

    let (head, body) = get(&gateway, "/partial HTTP/1.1\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("x-krakend-completed: false"),
        "{head}"
    );
    assert_eq!(body, json!({"n": 1}));

    let (head, _) = get(&gateway, "/none HTTP/1.1\r\n").await;
    assert!(head.starts_with("HTTP/1.1 500 "), "{head}");
}

#[tokio::test]
async fn a_slow_backend_is_left_out_at_the_timeout() {
    let fast = json_backend(200, r#"{"fast": true}"#).await;
    let mut slow = ScriptedOrigin::start().await;
    let gateway = gateway()
        .endpoint(json!({"endpoint": "/t", "timeout": "300ms", "backend": [
            {"host": [format!("http://{fast}")], "url_pattern": "/f"},
            {"host": [slow.url()], "url_pattern": "/s"},
        ]}))
        .endpoint(json!({"endpoint": "/only-slow", "timeout": "300ms", "backend": [{"host": [slow.url()], "url_pattern": "/s"}]}))
        .run();
    let request = tokio::spawn(RawClient::exchange(
        gateway.addr,
        b"GET /t HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ));
    let _hanging = slow.accept().await;
    let response = request.await.unwrap();
    assert!(response.starts_with(b"HTTP/1.1 200 "));
    assert_eq!(
        serde_json::from_slice::<Value>(body_of(&response)).unwrap(),
        json!({"fast": true})
    );

    let request = tokio::spawn(RawClient::exchange(
        gateway.addr,
        b"GET /only-slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ));
    let _hanging_too = slow.accept().await;
    let response = request.await.unwrap();
    assert!(
        response.starts_with(b"HTTP/1.1 504 "),
        "{}",
        String::from_utf8_lossy(&response)
    );
}

#[tokio::test]
async fn only_listed_headers_and_query_parameters_reach_the_backend() {
    let mut origin = ScriptedOrigin::start().await;
    let gateway = gateway()
        .endpoint(
            json!({"endpoint": "/h", "input_headers": ["X-Tenant"], "input_query_strings": ["page"],
            "backend": [{"host": [origin.url()], "url_pattern": "/b"}]}),
        )
        .run();
    let request = tokio::spawn(RawClient::exchange(gateway.addr, b"GET /h?page=2&secret=1 HTTP/1.1\r\nHost: x\r\nX-Tenant: acme\r\nCookie: s=1\r\nConnection: close\r\n\r\n"));
    let mut conn = origin.accept().await;
    assert!(
        conn.head.starts_with("GET /b?page=2 HTTP/1.1\r\n"),
        "{}",
        conn.head
    );
    assert_eq!(conn.header("x-tenant"), Some("acme"));
    assert_eq!(conn.header("cookie"), None);
    conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
        .await;
    let response = request.await.unwrap();
    assert!(response.starts_with(b"HTTP/1.1 200 "));
}
