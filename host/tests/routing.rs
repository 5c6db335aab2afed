//! Route tables that would leave a protection to chance, refused by `check` and by `run`
//! alike, and a plugin route served without protections, said out loud.

use serde_json::json;
use testkit::{gateway, GatewayBuilder, RawClient};

const PLUGIN: &str = "krakend-server-plugin-streaming";

/// A `no-op` endpoint with `method` and a JWT, pointing nowhere in particular.
fn protected_endpoint(endpoint: &str, method: &str) -> serde_json::Value {
    json!({"endpoint": endpoint, "method": method, "output_encoding": "no-op",
        "backend": [{"host": ["http://127.0.0.1:9"], "url_pattern": "/"}],
        "extra_config": {"auth/validator": {"alg": "HS256", "jwk_url": "http://127.0.0.1:9/jwks"}}})
}

fn public_endpoint(endpoint: &str) -> serde_json::Value {
    json!({"endpoint": endpoint, "output_encoding": "no-op",
        "backend": [{"host": ["http://127.0.0.1:9"], "url_pattern": "/"}]})
}

/// `check` fails with one `ERROR in the routes` line holding `reason`, and `run` exits
/// with it logged.
fn refused(config: impl Fn() -> GatewayBuilder, reason: &str) {
    let (ok, out) = config().check();
    assert!(!ok, "check passed:\n{out}");
    let errors: Vec<&str> = out.lines().filter(|l| l.starts_with("ERROR")).collect();
    assert_eq!(errors.len(), 1, "{out}");
    assert!(
        errors[0].starts_with("ERROR in the routes: ") && errors[0].contains(reason),
        "{out}\nwant: {reason}"
    );
    assert!(!out.contains("Syntax OK!"), "{out}");
    let log = config().run_refused();
    assert!(log.contains(reason), "run: {log}\nwant: {reason}");
    assert!(!log.contains("Listening on"), "{log}");
}

#[test]
fn two_endpoints_of_the_same_shape_are_refused_naming_both() {
    refused(
        || {
            gateway()
                .endpoint(public_endpoint("/sse/{other}"))
                .endpoint(public_endpoint("/a"))
                .endpoint(public_endpoint("/b"))
                .endpoint(protected_endpoint("/sse/{id}", "GET"))
        },
        r#"endpoints[0] "/sse/{other}" and endpoints[3] "/sse/{id}" match the same GET requests; neither is more specific"#,
    );
}

#[test]
fn a_twin_that_misses_a_method_of_its_plugin_route_is_refused() {
    refused(
        || {
            gateway()
                .streaming("/sse/{id}", "/events-stream/{id}", "http://127.0.0.1:9")
                .plugin_key("methods", json!(["GET", "POST"]))
                .endpoint(protected_endpoint("/sse/{id}", "GET"))
        },
        &format!(
            r#"{PLUGIN} route "/sse/{{id}}" accepts POST, but its endpoints[] twins (endpoints[0] "/sse/{{id}}" GET) do not: POST would be served without their JWT and rate limits"#
        ),
    );
}

#[tokio::test]
async fn a_plugin_route_without_a_twin_is_served_and_warned_about() {
    let config = || {
        gateway()
            .plugin_block(
                PLUGIN,
                json!({"backend_host": "http://127.0.0.1:9", "routes": [
                    {"endpoint": "/sse/{id}", "backend_url_pattern": "/e/{id}"},
                    {"endpoint": "/live/{id}", "backend_url_pattern": "/e/{id}"}]}),
            )
            .endpoint(protected_endpoint("/sse/{id}", "GET"))
    };
    let warning = format!(
        r#"{PLUGIN} route "/live/{{id}}" has no endpoints[] entry of the same shape: it is served without JWT and rate limits"#
    );
    let (ok, out) = config().check();
    assert!(ok, "a warning, not an error: {out}");
    let warnings: Vec<&str> = out.lines().filter(|l| l.starts_with("WARNING")).collect();
    assert_eq!(warnings, [format!("WARNING: {warning}")], "{out}");
    assert!(out.ends_with("Syntax OK!\n"), "{out}");

    let gateway = config().run();
    gateway.process.wait_for_log(&warning);
    // Served as warned: the plugin takes it (its origin is down: 502 from the plugin).
    let response = RawClient::get(gateway.addr, "/live/x", &[])
        .await
        .read_to_end()
        .await;
    assert!(
        response.starts_with(b"HTTP/1.1 502 "),
        "{}",
        String::from_utf8_lossy(&response)
    );
    gateway.process.wait_for_log("GET /live/x from 127.0.0.1");
    assert!(gateway.process.log().contains("connection handed over"));
}
