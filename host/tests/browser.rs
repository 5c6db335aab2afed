//! A real browser: headless Chromium opens an EventSource with credentials from another
//! origin, through the gateway's CORS and the streaming plugin. `.ci/run` installs
//! Chromium (`apt-get install chromium`).

use serde_json::json;
use testkit::{gateway, open_event_sources, origin, page_server, Gateway, TempDir, TestPki};

/// The page: opens the stream named in its query string and writes the ids of the first
/// three `tick` events, or `error`, into the DOM that Chromium dumps.
const PAGE: &str = r#"<html><body><pre id="out">waiting</pre><script>
const out = document.getElementById('out'); const got = [];
const es = new EventSource(new URLSearchParams(location.search).get('stream'), {withCredentials: true});
es.addEventListener('tick', e => { got.push(e.lastEventId); if (got.length >= 3) { out.textContent = 'ids:' + got.join(','); es.close(); } });
es.onerror = () => { if (got.length < 3) out.textContent = 'error'; es.close(); };
</script></body></html>"#;

/// What the page shows after Chromium has run it for a few (virtual) seconds. Async: the
/// page server runs on the test's own runtime.
async fn run_in_chromium(url: &str) -> String {
    let output = tokio::process::Command::new("chromium")
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=5000",
            "--dump-dom",
            url,
        ])
        .kill_on_drop(true)
        .output()
        .await
        .expect("running chromium (apt-get install chromium)");
    let dom = String::from_utf8_lossy(&output.stdout);
    dom.split(r#"<pre id="out">"#)
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .unwrap_or_else(|| panic!("no output element in {dom}"))
        .to_owned()
}

#[tokio::test]
async fn a_browser_streams_cross_origin_with_credentials_only_from_allowed_origins() {
    let origin = origin().interval_ms(100).run();
    let allowed = page_server(PAGE.to_owned()).await;
    let other = page_server(PAGE.to_owned()).await;
    let gateway = gateway()
        .streaming("/sse/{id}", "/events-stream/{id}", &origin.url())
        .root_extra(
            "security/cors",
            json!({"allow_origins": [format!("http://{allowed}")], "allow_credentials": true}),
        )
        .run();
    let stream = format!("http://{}/sse/browser", gateway.addr);

    assert_eq!(
        run_in_chromium(&format!("http://{allowed}/?stream={stream}")).await,
        "ids:1,2,3"
    );
    gateway
        .process
        .wait_for_log("GET /sse/browser 200 stream ended (the client left)");
    // Another origin gets the stream too (the request reaches the plugin), but without
    // CORS headers the browser refuses to hand it to the page.
    assert_eq!(
        run_in_chromium(&format!("http://{other}/?stream={stream}")).await,
        "error"
    );
}

/// The repository's `www/` folder, served by the built-in `static-filesystem` plugin.
fn www() -> serde_json::Value {
    json!({"prefix": "/www/", "path": concat!(env!("CARGO_MANIFEST_DIR"), "/../www")})
}

#[tokio::test]
async fn the_gateway_serves_the_stream_page_and_nothing_outside_its_folder() {
    let gateway = gateway().plugin_block("static-filesystem", www()).run();
    let get = |path: &str| {
        let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        testkit::RawClient::exchange(gateway.addr, request)
    };
    let page = String::from_utf8(get("/www/").await).unwrap();
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    assert!(
        page.contains("content-type: text/html; charset=utf-8"),
        "{page}"
    );
    assert!(page.contains("new EventSource(url)"), "{page}");
    for outside in [
        "/www/../Cargo.toml",
        "/www/%2e%2e/Cargo.toml",
        "/www/missing.html",
    ] {
        let response = String::from_utf8(get(outside).await).unwrap();
        assert!(
            response.starts_with("HTTP/1.1 404 "),
            "{outside}: {response}"
        );
    }
}

/// The page in a real browser, on a plain (non-fan-out) stream: events appear live.
#[tokio::test]
async fn the_stream_page_shows_events_live() {
    let origin = origin().interval_ms(50).run();
    let gateway = gateway()
        .streaming("/sse/{id}", "/events-stream/{id}", &origin.url())
        .plugin_block("static-filesystem", www())
        .run();
    let url = format!("http://{}/www/?stream=/sse/page&types=tick", gateway.addr);
    let mut page = testkit::PageWatcher::open(&url);
    let shown = page.wait_for(3).await;
    assert_eq!(shown["state"], "open", "{shown}");
    assert_eq!(
        shown["ids"].as_array().unwrap()[..3],
        [json!("1"), json!("2"), json!("3")],
        "{shown}"
    );
}

/// A gateway with the streaming plugin on `/sse/{id}` and an empty page at `/page/`, over
/// TLS with `pki`'s server certificate when given, on plain HTTP/1.1 otherwise.
fn twelve_sources_gateway(origin: &testkit::Process, pki: Option<&TestPki>) -> (TempDir, Gateway) {
    let folder = TempDir::new("page");
    std::fs::write(
        folder.path().join("index.html"),
        "<!doctype html><title>sources</title>",
    )
    .unwrap();
    let builder = gateway()
        .streaming("/sse/{id}", "/events-stream/{id}", &origin.url())
        .plugin_block(
            "static-filesystem",
            json!({"prefix": "/page/", "path": folder.path()}),
        );
    let builder = match pki {
        Some(pki) => builder.root(
            "tls",
            json!({"public_key": pki.server.cert, "private_key": pki.server.key}),
        ),
        None => builder,
    };
    (folder, builder.run())
}

/// What the issue asks of the edge: a browser puts every EventSource of an origin on one
/// HTTP/2 connection, so a page's 12 all stream (over HTTP/1.1 it opens 6 connections per
/// origin, and the 7th source waits for one of them to close). Chromium trusts the test
/// certificate by its pinned public key.
#[tokio::test]
async fn chromium_streams_twelve_event_sources_at_once_over_https() {
    let pki = TestPki::new();
    let origin = origin().interval_ms(100).run();
    let (_folder, gateway) = twelve_sources_gateway(&origin, Some(&pki));
    let url = format!("https://localhost:{}/page/", gateway.addr.port());
    let report = open_event_sources(&url, 12, 12, Some(&pki.server.cert)).await;
    let events = report["events"].as_array().unwrap();
    assert!(events.iter().all(|n| n.as_u64() >= Some(3)), "{report}");
    assert_eq!(report["protocol"], "h2", "{report}");
    assert_eq!(report["resources"], json!(vec!["h2"; 12]), "{report}");
}

/// The contrast, over plain HTTP/1.1: the first 6 sources stream, the other 6 are still
/// connecting while those have had 3 events each (Chromium's 6 connections per origin;
/// the 7th would have had its events by then as the first 6 did).
#[tokio::test]
async fn over_http1_chromium_streams_only_six_of_the_twelve() {
    let origin = origin().interval_ms(100).run();
    let (_folder, gateway) = twelve_sources_gateway(&origin, None);
    let url = format!("http://{}/page/", gateway.addr);
    let report = open_event_sources(&url, 12, 6, None).await;
    let events = report["events"].as_array().unwrap();
    let streaming = events.iter().filter(|n| n.as_u64() > Some(0)).count();
    assert_eq!(streaming, 6, "{report}");
    let connecting = report["states"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| *s == 0)
        .count();
    assert_eq!(connecting, 6, "{report}");
    assert_eq!(report["protocol"], "http/1.1", "{report}");
}
