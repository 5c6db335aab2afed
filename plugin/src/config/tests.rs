use super::*;

const POC: &str = r#"{"endpoint": "/sse/{id}", "backend_url_pattern": "/events-stream/{id}", "backend_host": "http://localhost:9081"}"#;

#[test]
fn accepts_the_poc_block_with_defaults() {
    let block = parse(POC).unwrap();
    let [route] = &block.routes[..] else {
        panic!("one route")
    };
    assert_eq!(
        route.backends,
        [Backend {
            base: "http://localhost:9081".into(),
            authority: "localhost:9081".into(),
            addr: "localhost:9081".into(),
            tls_name: None,
        }]
    );
    assert_eq!(route.methods, ["GET"]);
    assert_eq!(route.load_balance, LoadBalance::RoundRobin);
    assert_eq!(route.forward_headers, DEFAULT_FORWARD_HEADERS);
    assert_eq!(route.keepalive, Some(Duration::from_secs(15)));
    assert_eq!(route.upstream_idle_timeout, Some(Duration::from_secs(60)));
    assert_eq!(route.max_reconnects, 5);
    assert_eq!(block.max_streams, DEFAULT_MAX_STREAMS);
    assert_eq!(block.read_buffer_bytes, DEFAULT_READ_BUFFER_BYTES);
    assert_eq!(block.max_event_bytes, DEFAULT_MAX_EVENT_BYTES);
    assert!(route.template.matches("/sse/abc").is_some());
    let portless = parse(&POC.replace("localhost:9081", "origin.internal")).unwrap();
    assert_eq!(portless.routes[0].backends[0].addr, "origin.internal:80");
}

#[test]
fn routes_take_the_block_keys_as_defaults_and_sort_most_specific_first() {
    let block = parse(
        r#"{
        "keepalive": "0", "backend_host": "http://a:1", "max_streams": 7,
        "routes": [
            {"endpoint": "/n/*", "backend_url_pattern": "/feed/{*}",
             "backend_host": ["http://b:2", "http://c:3"], "load_balance": "sticky",
             "sticky_key": "cookie:session", "keepalive": "500ms", "max_streams": 2},
            {"endpoint": "/n/{id}", "backend_url_pattern": "/one/{id}", "methods": ["get", "POST"]}
        ]}"#,
    )
    .unwrap();
    assert_eq!(block.max_streams, 7);
    let endpoints: Vec<_> = block.routes.iter().map(|r| r.endpoint.as_str()).collect();
    assert_eq!(endpoints, ["/n/{id}", "/n/*"]);
    let (one, wild) = (&block.routes[0], &block.routes[1]);
    assert_eq!(one.keepalive, None, "\"0\" turns the keepalive off");
    assert_eq!(one.backends[0].base, "http://a:1");
    assert_eq!(one.methods, ["GET", "POST"]);
    assert_eq!(
        one.max_streams, 0,
        "the block's limit is not a route default"
    );
    assert_eq!(wild.keepalive, Some(Duration::from_millis(500)));
    assert_eq!(wild.backends.len(), 2);
    assert_eq!(
        wild.load_balance,
        LoadBalance::Sticky(StickyKey::Cookie("session".into()))
    );
    assert_eq!(wild.max_streams, 2);
}

#[test]
fn refuses_with_the_json_path_and_the_reason() {
    let route = |extra: &str| {
        format!(
            r#"{{"routes": [{{"endpoint": "/s", "backend_url_pattern": "/e", "backend_host": "http://h"{extra}}}]}}"#
        )
    };
    let cases = [
        (
            r#"{"backend_url_pattern": "/e", "backend_host": "http://h"}"#.to_owned(),
            "endpoint: missing",
        ),
        (
            r#"{"endpoint": "", "backend_url_pattern": "/e", "backend_host": "http://h"}"#.into(),
            "endpoint: must not be empty",
        ),
        (
            r#"{"endpoint": "/s", "backend_host": "http://h"}"#.into(),
            "backend_url_pattern: missing",
        ),
        (
            r#"{"routes": [{"endpoint": "/s", "backend_url_pattern": "/e"}]}"#.into(),
            "routes[0].backend_host: missing",
        ),
        (
            r#"{"routes": [{"endpoint": "/s", "backend_url_pattern": "/e", "backend_host": "ftp://h"}]}"#.into(),
            "routes[0].backend_host: \"ftp://h\" is not an http:// or https:// URL",
        ),
        (
            r#"{"endpoint": "/s", "backend_url_pattern": "/e", "backend_host": "http://h", "client_tls": {"ca_certs": ["/nonexistent/ca.pem"]}}"#.into(),
            "client_tls.ca_certs[0]: /nonexistent/ca.pem: cannot read",
        ),
        (
            r#"{"endpoint": "/s", "backend_url_pattern": "/e", "backend_host": "http://h/path"}"#
                .into(),
            "backend_host: \"http://h/path\" must be scheme and host only",
        ),
        (route(r#", "keepalive": "15 s""#), "routes[0].keepalive: invalid duration"),
        (route(r#", "keepalve": "15s""#), "routes[0].keepalve: unknown field `keepalve`"),
        (route(r#", "max_streams": "ten""#), "routes[0].max_streams: invalid type"),
        (route(r#", "load_balance": "random""#), "routes[0].load_balance: \"random\""),
        (route(r#", "load_balance": "sticky""#), "routes[0].sticky_key: required"),
        (
            route(r#", "load_balance": "sticky", "sticky_key": "user""#),
            "routes[0].sticky_key: \"user\" is not",
        ),
        (route(r#", "methods": ["GE T"]"#), "routes[0].methods: \"GE T\""),
        (
            r#"{"endpoint": "/s", "backend_url_pattern": "/e", "backend_host": [] }"#.into(),
            "backend_host: must list at least one host",
        ),
        (r#"{"routes": []}"#.into(), "routes: must list at least one route"),
        (
            r#"{"backend_host": "http://h", "backend_url_pattern": "/e",
                "routes": [{"endpoint": "/a/{x}"}, {"endpoint": "/a/{y}"}]}"#
                .into(),
            "\"/a/{x}\" and \"/a/{y}\" match the same requests",
        ),
        (r#"{"read_buffer_bytes": 10}"#.into(), "read_buffer_bytes: 10 is below"),
        (r#"{"max_event_bytes": 0}"#.into(), "max_event_bytes: must be at least 1"),
        (route(r#", "replay": 10"#), "routes[0].replay: only for fan-out routes"),
        (
            route(r#", "replay_bytes": 10"#),
            "routes[0].replay_bytes: only for fan-out routes",
        ),
        (
            route(r#", "fanout": true, "replay_bytes": 0"#),
            "routes[0].replay_bytes: must be at least 1",
        ),
        (
            route(r#", "fanout": true, "client_queue": 0"#),
            "routes[0].client_queue: must be at least 1",
        ),
        (route(r#", "topic": "t""#), "routes[0].topic: only for kafka:// hosts"),
        (
            r#"{"endpoint": "/k", "backend_host": "kafka://b:9092"}"#.into(),
            "topic: required for kafka:// hosts",
        ),
        (
            r#"{"endpoint": "/k", "backend_host": ["kafka://b:9092", "http://h"], "topic": "t"}"#
                .into(),
            "backend_host: kafka:// and other hosts cannot be mixed",
        ),
        (
            r#"{"endpoint": "/k", "backend_host": "kafka://b", "topic": "t"}"#.into(),
            "backend_host: \"kafka://b\" is not kafka://host:port",
        ),
        (
            r#"{"endpoint": "/k", "backend_host": "kafka://b:1", "topic": "t", "start_from": "now"}"#
                .into(),
            "start_from: \"now\" is not",
        ),
        (r#"{"eject_for": 5}"#.into(), "eject_for: invalid type"),
        ("[1]".into(), "invalid type"),
    ];
    for (json, expected) in cases {
        let error = parse(&json).unwrap_err().to_string();
        assert!(error.contains(expected), "{json}: {error}");
    }
}

#[test]
fn same_paths_with_different_methods_are_not_ambiguous() {
    let block = parse(
        r#"{"backend_host": "http://h", "backend_url_pattern": "/e",
            "routes": [{"endpoint": "/a/{x}"}, {"endpoint": "/a/{y}", "methods": ["POST"]}]}"#,
    );
    assert!(block.is_ok(), "{:?}", block.err());
}

#[test]
fn fan_out_and_kafka_routes_with_their_defaults() {
    let block = parse(
        r#"{"routes": [
            {"endpoint": "/ticker", "backend_url_pattern": "/t", "backend_host": "http://h:1",
             "fanout": true, "replay_age": "5m"},
            {"endpoint": "/orders/{user}", "backend_host": ["kafka://a:9092", "kafka://b:9092"],
             "topic": "orders", "key": "{user}", "event_header": "type"}
        ]}"#,
    )
    .unwrap();
    let ticker = block
        .routes
        .iter()
        .find(|r| r.endpoint == "/ticker")
        .unwrap();
    let fanout = ticker.fanout.as_ref().unwrap();
    assert_eq!(fanout.replay, 1000);
    assert_eq!(fanout.replay_bytes, 4 * 1024 * 1024);
    assert_eq!(fanout.client_queue, 500);
    assert_eq!(fanout.replay_age, Some(Duration::from_secs(300)));
    assert_eq!(fanout.linger, Duration::from_secs(5));
    assert!(ticker.kafka.is_none());

    let orders = block
        .routes
        .iter()
        .find(|r| r.endpoint == "/orders/{user}")
        .unwrap();
    assert!(orders.fanout.is_some(), "a topic is always fanned out");
    assert!(orders.backends.is_empty());
    let kafka = orders.kafka.as_ref().unwrap();
    assert_eq!(kafka.brokers, "a:9092,b:9092");
    assert_eq!(kafka.topic, "orders");
    assert_eq!(kafka.key.as_deref(), Some("{user}"));
    assert_eq!(kafka.start_from, StartFrom::Earliest);
    assert_eq!(kafka.event_header.as_deref(), Some("type"));
    assert_eq!(kafka.max_catch_ups, 8);
}

#[test]
fn a_default_at_the_top_of_the_block_is_refused_under_its_own_key() {
    let block = r#"{"keepalive": "15 s", "backend_host": "http://h", "backend_url_pattern": "/e",
                   "routes": [{"endpoint": "/a"}, {"endpoint": "/b", "keepalive": "1s"}]}"#;
    let error = parse(block).unwrap_err().to_string();
    assert!(error.starts_with("keepalive: invalid duration"), "{error}");
    let route = r#"{"routes": [{"endpoint": "/a", "backend_host": "http://h",
                   "backend_url_pattern": "/e"}, 5]}"#;
    let error = parse(route).unwrap_err().to_string();
    assert!(
        error.starts_with("routes[1]: invalid type: integer `5`"),
        "{error}"
    );
}

#[test]
fn a_post_route_s_keys_and_their_defaults() {
    let block = parse(
        r#"{"backend_host": "http://h", "backend_url_pattern": "/e", "routes": [
            {"endpoint": "/chat", "methods": ["POST"], "retry_on": [429, 503],
             "max_body_bytes": 4096, "resume": false},
            {"endpoint": "/feed"}
        ]}"#,
    )
    .unwrap();
    let chat = block.routes.iter().find(|r| r.endpoint == "/chat").unwrap();
    assert_eq!(
        chat.retry_on,
        [
            http::StatusCode::TOO_MANY_REQUESTS,
            http::StatusCode::SERVICE_UNAVAILABLE
        ]
    );
    assert_eq!(chat.max_body_bytes, Some(4096));
    assert_eq!(chat.resume, Some(false));
    let feed = block.routes.iter().find(|r| r.endpoint == "/feed").unwrap();
    assert!(
        feed.retry_on.is_empty(),
        "no failover on a status unless asked"
    );
    assert_eq!(feed.max_body_bytes, None, "the host's root max_body_bytes");
    assert_eq!(feed.resume, None, "decided by the request's method");
    assert!(feed.set_headers.is_empty());
    for (code, says) in [(99, "99"), (600, "600")] {
        let block = format!(r#"{}, "retry_on": [{code}]}}"#, &POC[..POC.len() - 1]);
        let error = parse(&block).unwrap_err().to_string();
        assert_eq!(
            error,
            format!("retry_on: {says} is not an HTTP status from 100 to 599")
        );
    }
}

#[test]
fn a_fan_out_route_takes_no_request_shaping_keys() {
    for (key, value) in [
        ("methods", r#"["GET", "POST"]"#),
        ("max_body_bytes", "10"),
        ("resume", "false"),
        ("retry_on", "[503]"),
    ] {
        let block = format!(
            r#"{}, "fanout": true, "{key}": {value}}}"#,
            &POC[..POC.len() - 1]
        );
        let error = parse(&block).unwrap_err().to_string();
        assert_eq!(
            error,
            format!(
                "{key}: not for a fan-out route, whose one upstream is a GET shared by its clients"
            )
        );
    }
    let get_only = format!(
        r#"{}, "fanout": true, "methods": ["get"]}}"#,
        &POC[..POC.len() - 1]
    );
    assert!(parse(&get_only).is_ok());
}

#[test]
fn https_hosts_are_dialled_with_tls_by_their_name() {
    let block = parse(
        r#"{"endpoint": "/s", "backend_url_pattern": "/e",
            "backend_host": ["https://origin.internal", "http://plain:81", "https://[::1]:8443"]}"#,
    )
    .unwrap();
    let route = &block.routes[0];
    assert!(route.uses_tls());
    let named: Vec<_> = route
        .backends
        .iter()
        .map(|b| (b.base.as_str(), b.addr.as_str(), b.tls_name.clone()))
        .collect();
    assert_eq!(
        named,
        [
            (
                "https://origin.internal",
                "origin.internal:443",
                Some(ServerName::try_from("origin.internal").unwrap())
            ),
            ("http://plain:81", "plain:81", None),
            (
                "https://[::1]:8443",
                "[::1]:8443",
                Some(ServerName::try_from("::1").unwrap())
            ),
        ]
    );
    assert!(!parse(POC).unwrap().routes[0].uses_tls());
}
