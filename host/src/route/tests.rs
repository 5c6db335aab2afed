//! The route table's one rule, tried as a config author and as an attacker would.

use serde_json::{json, Value};

use super::*;

/// A config with these `endpoints[]` entries (`"/path"` or `["/path", "POST"]`) and
/// `extra` merged into its root.
fn config(endpoints: &[Value], extra: Value) -> Config {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|e| {
            let (endpoint, method) = match e {
                Value::Array(pair) => (pair[0].clone(), pair[1].clone()),
                other => (other.clone(), json!("GET")),
            };
            json!({"endpoint": endpoint, "method": method,
                   "backend": [{"host": ["http://127.0.0.1:1"], "url_pattern": "/"}]})
        })
        .collect();
    let mut root = json!({"version": 3, "endpoints": endpoints});
    for (key, value) in extra.as_object().unwrap() {
        root[key] = value.clone();
    }
    crate::config::parse("krakend.json", &root.to_string()).unwrap()
}

fn plugin_route(plugin: usize, route: u32, endpoint: &str, methods: &[&str]) -> PluginRoute {
    PluginRoute {
        plugin,
        route,
        endpoint: endpoint.into(),
        template: Template::parse(endpoint).unwrap(),
        methods: methods.iter().map(|m| m.to_string()).collect(),
    }
}

fn router(endpoints: &[Value], plugin_routes: &[PluginRoute]) -> Result<Router, RouteError> {
    Router::new(
        &config(endpoints, json!({})),
        plugin_routes,
        &["streaming", "other"],
        false,
    )
}

fn endpoint(index: usize, params: &[&str]) -> Route {
    Route::Endpoint {
        index,
        params: params.iter().map(|p| p.to_string()).collect(),
    }
}

#[test]
fn the_most_specific_template_wins_whatever_the_config_order() {
    let router = router(&[json!("/{a}/{b}"), json!("/sse/{id}")], &[]).unwrap();
    assert_eq!(router.decide("GET", "/sse/1").route, endpoint(1, &["1"]));
    assert_eq!(router.decide("GET", "/x/y").route, endpoint(0, &["x", "y"]));
    // Another spelling of the literal is the same path to an origin that decodes it.
    assert_eq!(router.decide("GET", "/%73se/1").route, endpoint(1, &["1"]));
    assert_eq!(
        router.template_of(&router.decide("GET", "/sse/1")),
        "/sse/{id}"
    );
    assert_eq!(router.template_of(&router.decide("GET", "/a")), "unmatched");
}

#[test]
fn a_plugin_route_takes_its_twins_protections_whatever_the_config_order() {
    let routes = [plugin_route(0, 0, "/sse/{id}", &["GET"])];
    let router = router(&[json!("/{a}/{b}"), json!("/sse/{id}")], &routes).unwrap();
    let decision = router.decide("GET", "/sse/1");
    let Route::Plugin(claim) = decision.route else {
        panic!("{decision:?}")
    };
    assert_eq!((claim.plugin, claim.route, claim.twin), (0, 0, Some(1)));
    assert_eq!(decision.protected_by(), Some(1));
    assert_eq!(router.template_of_claim(&claim), "/sse/{id}");
    assert!(router.warnings().is_empty(), "{:?}", router.warnings());
}

#[test]
fn the_method_decides_among_the_templates_that_match() {
    let router = router(
        &[
            json!("/a"),
            json!(["/a/b", "GET"]),
            json!(["/a/{x}", "POST"]),
        ],
        &[],
    )
    .unwrap();
    assert_eq!(router.decide("POST", "/a").route, Route::MethodNotAllowed);
    assert_eq!(router.decide("GET", "/b").route, Route::NotFound);
    assert_eq!(router.decide("POST", "/a/b").route, endpoint(2, &["b"]));
    assert_eq!(router.decide("GET", "/a/c").route, Route::MethodNotAllowed);
    assert_eq!(router.decide("GET", "/__stats").route, Route::NotFound);
}

#[test]
fn two_endpoints_for_the_same_requests_are_refused_naming_both() {
    let endpoints = [
        json!("/sse/{id}"),
        json!("/a"),
        json!("/b"),
        json!("/sse/{other}"),
    ];
    assert_eq!(
        router(&endpoints, &[]).unwrap_err(),
        RouteError::SameRequests {
            first: r#"endpoints[0] "/sse/{id}""#.into(),
            second: r#"endpoints[3] "/sse/{other}""#.into(),
            method: "GET".into(),
        }
    );
    // The same shape under other methods is two routes.
    let router = router(&[json!("/sse/{id}"), json!(["/sse/{other}", "POST"])], &[]).unwrap();
    assert_eq!(router.decide("POST", "/sse/1").route, endpoint(1, &["1"]));
}

#[test]
fn a_twin_must_take_every_method_of_its_plugin_route() {
    let routes = [plugin_route(0, 0, "/sse/{id}", &["GET", "POST"])];
    let error = router(&[json!("/sse/{id}")], &routes).unwrap_err();
    assert_eq!(
        error,
        RouteError::UncoveredMethod {
            route: r#"streaming route "/sse/{id}""#.into(),
            method: "POST".into(),
            twins: r#"endpoints[0] "/sse/{id}" GET"#.into(),
        }
    );
    assert!(error
        .to_string()
        .contains("without their JWT and rate limits"));
    let covered = router(&[json!("/sse/{id}"), json!(["/sse/{x}", "POST"])], &routes).unwrap();
    let Route::Plugin(claim) = covered.decide("POST", "/sse/1").route else {
        panic!("the plugin serves POST")
    };
    assert_eq!(claim.twin, Some(1));
}

#[test]
fn a_plugin_route_without_a_twin_is_served_and_warned_about() {
    let routes = [
        plugin_route(0, 0, "/sse/{id}", &["GET", "POST"]),
        plugin_route(0, 1, "/live/{id}", &["GET"]),
    ];
    let router = router(&[json!("/sse/{id}"), json!(["/sse/{id}", "POST"])], &routes).unwrap();
    assert_eq!(
        router.warnings(),
        [
            r#"streaming route "/live/{id}" has no endpoints[] entry of the same shape: it is served without JWT and rate limits"#
        ]
    );
    let Route::Plugin(claim) = router.decide("GET", "/live/x").route else {
        panic!("the plugin serves it")
    };
    assert_eq!((claim.route, claim.twin), (1, None));
}

#[test]
fn routes_of_two_plugins_or_over_the_hosts_own_paths_are_refused() {
    let routes = [
        plugin_route(0, 0, "/sse/{id}", &["GET"]),
        plugin_route(1, 0, "/sse/{x}", &["POST", "GET"]),
    ];
    assert_eq!(
        router(&[], &routes).unwrap_err(),
        RouteError::SameRequests {
            first: r#"streaming route "/sse/{id}""#.into(),
            second: r#"other route "/sse/{x}""#.into(),
            method: "GET".into(),
        }
    );
    let health = [plugin_route(0, 0, "/__health", &["GET"])];
    assert!(matches!(
        router(&[], &health),
        Err(RouteError::SameRequests { .. })
    ));
    assert!(matches!(
        router(&[json!("/__health")], &[]),
        Err(RouteError::SameRequests { .. })
    ));
}

#[test]
fn the_hosts_own_paths_and_static_files_are_routes_too() {
    let config = config(
        &[json!("/www/{page}")],
        json!({"extra_config": {"plugin/http-server": {"name": ["static-filesystem"],
            "static-filesystem": {"prefix": "/www/", "path": "./www/"}}}}),
    );
    let router = Router::new(&config, &[], &[], true).unwrap();
    assert_eq!(router.decide("GET", "/__health").route, Route::Health);
    assert_eq!(router.decide("POST", "/__debug/x").route, Route::Debug);
    let file = |path: &str| Route::StaticFiles { path: path.into() };
    assert_eq!(router.decide("GET", "/www/a/b.js").route, file("a/b.js"));
    assert_eq!(router.decide("HEAD", "/www").route, file(""));
    assert_eq!(router.decide("GET", "/www/").route, file(""));
    // An endpoint more specific than the prefix takes its own paths.
    assert_eq!(router.decide("GET", "/www/x").route, endpoint(0, &["x"]));
    assert_eq!(
        router.decide("POST", "/www/a/b.js").route,
        Route::MethodNotAllowed
    );
    let without_debug = Router::new(&config, &[], &[], false).unwrap();
    assert_eq!(
        without_debug.decide("GET", "/__debug/x").route,
        Route::NotFound
    );
}

#[test]
fn a_decision_carries_from_the_gate_to_the_service_in_order() {
    let router = router(&[json!("/a/{x}")], &[]).unwrap();
    let pending = Pending::default();
    pending.push(router.decide("GET", "/a/1"));
    pending.push(router.decide("GET", "/a/2"));
    assert_eq!(pending.pop().unwrap().route, endpoint(0, &["1"]));
    assert_eq!(pending.pop().unwrap().route, endpoint(0, &["2"]));
    assert_eq!(pending.pop(), None);
}
