//! `host check` and `host test-plugin` as a user runs them.

use std::process::{Command, Output};

use testkit::{bin, gateway, release_dir, TempPath};

fn host(args: &[&str]) -> (bool, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(bin("host"))
        .args(args)
        // The example's chat route takes its upstream key from the environment.
        .env("LLM_API_KEY", "example-key")
        .output()
        .expect("running host");
    (
        status.success(),
        String::from_utf8_lossy(&stdout).into_owned() + &String::from_utf8_lossy(&stderr),
    )
}

#[test]
fn check_accepts_the_example_config() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../krakend.json");
    let (ok, out) = host(&["check", "-c", example]);
    assert!(ok, "{out}");
    assert_eq!(
        out,
        format!("Parsing configuration file: {example}\nSyntax OK!\n")
    );
}

#[test]
fn check_asks_the_plugins_about_their_blocks() {
    let config = serde_json::json!({
        "version": 3,
        "plugin": {"folder": release_dir(), "pattern": "krakend_server_plugin_streaming.so"},
        "extra_config": {"plugin/http-server": {
            "name": ["krakend-server-plugin-streaming"],
            "krakend-server-plugin-streaming": {
                "backend_host": "http://h", "backend_url_pattern": "/e",
                "routes": [{"endpoint": "/a/{x}"}, {"endpoint": "/a/{y}"}, {"endpoint": "/a/b"}]
            }
        }}
    });
    let file = TempPath::write("ambiguous", &config.to_string());
    let (ok, out) = host(&["check", "-c", file.path().to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("ERROR in the plugin config: krakend-server-plugin-streaming: routes: \"/a/{x}\" and \"/a/{y}\" match the same requests"),
        "{out}"
    );
}

#[test]
fn check_names_the_json_path_or_the_line() {
    let cases = [
        (
            r#"{"version": 3, "endpoints": [{"endpoint": "/a", "backend": [{"host": "http://h", "url_pattern": "/"}]}]}"#,
            "endpoints[0].backend[0].host: invalid type: string \"http://h\", expected a sequence",
        ),
        (
            r#"{"version": 3, "endpoints": [{"endpoint": "/a", "backend": [{"host": ["http://h"]}]}]}"#,
            "endpoints[0].backend[0]: missing field `url_pattern`",
        ),
        (
            "{\"version\": 3,\n \"port\": 80,,\n}",
            "invalid JSON at line 2, column 13",
        ),
        (r#"{"version": 1}"#, "version: unsupported version 1"),
        (
            r#"{"version": 3, "endpoints": [{"endpoint": "/a", "backend": [{"host": ["http://h"], "url_pattern": "/"}], "extra_config": {"auth/validator": {"alg": "HS256", "jwk_local_path": "/no/such/jwks.json"}}}]}"#,
            "endpoints[0].extra_config.auth/validator.jwk_local_path: /no/such/jwks.json: No such file",
        ),
        (
            r#"{"version": 3, "endpoints": [{"endpoint": "/a", "backend": [{"host": ["http://h"], "url_pattern": "/"}], "extra_config": {"qos/ratelimit/router": {"max_rate": 0}}}]}"#,
            "endpoints[0].extra_config.qos/ratelimit/router: max_rate: must be more than zero",
        ),
        (
            r#"{"version": 3, "extra_config": {"security/cors": {"allow_origin": ["*"]}}}"#,
            "unknown field `allow_origin`",
        ),
        (
            r#"{"version": 3, "extra_config": {"telemetry/logging": {"level": "LOUD"}}}"#,
            "extra_config.telemetry/logging.level: \"LOUD\" is not DEBUG, INFO, WARNING, ERROR or CRITICAL",
        ),
    ];
    for (text, expected) in cases {
        let file = TempPath::write("broken", text);
        let path = file.path().to_str().unwrap();
        let (ok, out) = host(&["check", "-c", path]);
        assert!(!ok, "{text} passed the check");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "one error line: {out}");
        assert_eq!(lines[0], format!("Parsing configuration file: {path}"));
        assert!(
            lines[1].contains(expected),
            "{text}\n  gave {}\n  want {expected}",
            lines[1]
        );
    }
}

#[test]
fn test_plugin_accepts_the_real_plugin() {
    let plugin = bin("libkrakend_server_plugin_streaming.so");
    let (ok, out) = host(&["test-plugin", "-s", plugin.to_str().unwrap()]);
    assert!(ok, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        format!(
            "[OK] SERVER\t{} (krakend-server-plugin-streaming)",
            plugin.display()
        )
    );
    assert!(lines[1].starts_with("[OK] 1 tested plugin(s) in "), "{out}");
}

#[test]
fn test_plugin_names_each_cause() {
    let plugin = bin("libkrakend_server_plugin_streaming.so");
    let not_a_library = TempPath::write(
        "not-a-library",
        &"a text file, not a shared library\n".repeat(10),
    );
    // A real shared library without the root module: a Rust cdylib of the workspace would
    // do, but the C library is on every machine and is unmistakably not a plugin.
    let no_root = "/lib/x86_64-linux-gnu/libc.so.6";
    let args = [
        plugin.to_str().unwrap(),
        not_a_library.path().to_str().unwrap(),
        no_root,
        "/no/such/plugin.so",
    ];
    let (ok, out) = host(&[&["test-plugin", "-s"][..], &args].concat());
    assert!(!ok, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("[OK] SERVER\t"), "{out}");
    assert_eq!(
        lines[1],
        format!(
            "[KO] SERVER\t{}: not a loadable library (invalid ELF header)",
            args[1]
        )
    );
    assert_eq!(lines[2], format!("[KO] SERVER\t{no_root}: missing root module (not a server plugin built against this host's ABI)"));
    assert_eq!(
        lines[3],
        "[KO] SERVER\t/no/such/plugin.so: not a loadable library (No such file or directory)"
    );
    assert!(
        lines[4].starts_with("[KO] 3 tested plugin(s) failed out of 4 in "),
        "{out}"
    );
}

#[test]
fn test_plugin_needs_a_type_and_a_file() {
    assert_eq!(
        host(&["test-plugin"]),
        (
            false,
            "You must declare the expected type of the plugin.\n".into()
        )
    );
    assert_eq!(
        host(&["test-plugin", "-s"]),
        (false, "At least one plugin is required.\n".into())
    );
}

#[test]
fn a_plugin_that_refuses_its_config_is_reported_and_the_host_serves_on() {
    let gateway = gateway().streaming("/sse/{id}", "/e/{id}", "ftp://x").run();
    gateway.process.wait_for_log("Listening on");
    let log = gateway.process.log();
    assert!(
        log.contains("[PLUGIN: Server] krakend-server-plugin-streaming refused to start: backend_host: \"ftp://x\" is not an http:// or https:// URL"),
        "{log}"
    );
    assert!(
        log.contains("[SERVICE: Plugin Loader] Total plugins loaded: 1"),
        "{log}"
    );
}
