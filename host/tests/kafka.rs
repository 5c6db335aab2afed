//! Kafka topics as event streams, against a real Kafka-protocol broker (tansu, which
//! `.ci/run` installs): replay then live, exact resume by `Last-Event-ID` after a client
//! reconnect and after a gateway restart, a broker restart mid-stream, a broker that is
//! down at connect, key filters, the page in a real browser, and N gateways on one topic:
//! any one resumes a client another served, and behind haproxy a browser moves from a
//! gateway that dies to the other one.

use std::time::Instant;

use serde_json::{json, Value};
use sse::{Event, Parser};
use testkit::{body_of, broker, gateway, haproxy, Broker, Gateway, PageWatcher, RawClient, STEP};

const PLUGIN: &str = "krakend-server-plugin-streaming";

/// A gateway streaming the topic `orders` at `/orders` and, filtered by key, at
/// `/orders/{user}`.
fn kafka_gateway(broker: &Broker, extra: Value) -> Gateway {
    let mut block = json!({
        "backend_host": broker.url(),
        "topic": "orders",
        "event_header": "type",
        "keepalive": "200ms",
        "reconnect_delay": "50ms",
        "max_reconnect_delay": "500ms",
        "dial_timeout": "2s",
        "routes": [{"endpoint": "/orders"}, {"endpoint": "/orders/{user}", "key": "{user}"}],
    });
    for (key, value) in extra.as_object().unwrap() {
        block[key] = value.clone();
    }
    gateway()
        .plugin_block(PLUGIN, block)
        .plugin_block(
            "static-filesystem",
            json!({"prefix": "/www/", "path": concat!(env!("CARGO_MANIFEST_DIR"), "/../www")}),
        )
        .run()
}

fn events_of(client: &RawClient) -> Vec<Event> {
    let mut events = Vec::new();
    Parser::new().feed(body_of(&client.received), |e| events.push(e));
    events
}

fn data(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.data.as_str()).collect()
}

/// What the page shows, sorted: partitions interleave in any order.
fn sorted_data(shown: &Value) -> Vec<&str> {
    let mut values: Vec<&str> = shown["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    values.sort();
    values
}

async fn order(broker: &Broker, partition: i32, user: &str, value: &str) {
    broker
        .produce("orders", partition, user, value, &[("type", "order")])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_is_replayed_then_live_and_resumed_exactly() {
    let broker = broker();
    broker.create_topic("orders", 2);
    order(&broker, 0, "ann", "a1").await;
    order(&broker, 1, "bob", "b1").await;
    order(&broker, 0, "ann", "a2").await;
    let gateway = kafka_gateway(&broker, json!({}));

    // A new client gets the topic from the beginning, then live messages.
    let mut first = RawClient::get(gateway.addr, "/orders", &[]).await;
    first.read_until(b"data: a2\n").await;
    first.read_until(b"data: b1\n").await;
    order(&broker, 1, "bob", "b2").await;
    first.read_until(b"data: b2\n").await;
    let seen = events_of(&first);
    let mut values = data(&seen);
    values.sort();
    assert_eq!(values, ["a1", "a2", "b1", "b2"], "each message once");
    assert!(
        seen.iter().all(|e| e.event == "order"),
        "event: from the header"
    );
    assert_eq!(seen[3].data, "b2");
    assert_eq!(
        seen[3].id, "0:2,1:2",
        "the id is the place just past the event"
    );

    // A client that resumes from the second event gets exactly the rest, through the
    // broker (its place is older than the hub) and then the ring.
    let mut resumed = RawClient::get(
        gateway.addr,
        "/orders",
        &[&format!("Last-Event-ID: {}", seen[1].id)],
    )
    .await;
    resumed.read_until(b"data: b2\n").await;
    assert_eq!(data(&events_of(&resumed)), data(&seen[2..]));
    // One that resumes from the newest event gets only what follows, by query parameter.
    let mut current = RawClient::get(gateway.addr, "/orders?lastEventId=0%3A2%2C1%3A2", &[]).await;
    current.read_until(b"text/event-stream").await;
    order(&broker, 0, "ann", "a3").await;
    for client in [&mut first, &mut resumed, &mut current] {
        client.read_until(b"data: a3\n").await;
    }
    assert_eq!(data(&events_of(&current)), ["a3"]);
    let mut expected = data(&seen[2..]);
    expected.push("a3");
    assert_eq!(data(&events_of(&resumed)), expected);

    // A key filter: only ann's orders, from the beginning.
    let mut ann = RawClient::get(gateway.addr, "/orders/ann", &[]).await;
    ann.read_until(b"data: a3\n").await;
    assert_eq!(data(&events_of(&ann)), ["a1", "a2", "a3"]);
    let stats = gateway.route_stats("/orders").await;
    assert_eq!(stats["sources"], 1, "one consumer for the topic: {stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_exactly_after_a_gateway_restart() {
    let broker = broker();
    broker.create_topic("orders", 2);
    let mut gateway = kafka_gateway(&broker, json!({"start_from": "latest"}));
    let mut client = RawClient::get(gateway.addr, "/orders", &[]).await;
    client.read_until(b"text/event-stream").await;
    order(&broker, 0, "ann", "before-1").await;
    order(&broker, 1, "bob", "before-2").await;
    client.read_until(b"data: before-1\n").await;
    client.read_until(b"data: before-2\n").await;
    let last_id = events_of(&client).last().unwrap().id.clone();

    gateway.restart();
    order(&broker, 1, "bob", "during-1").await;
    order(&broker, 0, "ann", "during-2").await;
    let mut back = RawClient::get(
        gateway.addr,
        "/orders",
        &[&format!("Last-Event-ID: {last_id}")],
    )
    .await;
    back.read_until(b"data: during-2\n").await;
    back.read_until(b"data: during-1\n").await;
    order(&broker, 0, "ann", "after").await;
    back.read_until(b"data: after\n").await;
    let events = events_of(&back);
    let mut values = data(&events);
    let last = values.pop();
    values.sort();
    assert_eq!(
        values,
        ["during-1", "during-2"],
        "nothing lost, nothing repeated"
    );
    assert_eq!(last, Some("after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_stream_loses_nothing() {
    let mut broker = broker();
    broker.create_topic("orders", 1);
    let gateway = kafka_gateway(&broker, json!({}));
    let mut client = RawClient::get(gateway.addr, "/orders", &[]).await;
    client.read_until(b"text/event-stream").await;
    order(&broker, 0, "ann", "one").await;
    client.read_until(b"data: one\n").await;

    broker.stop();
    // Keepalives go on while the broker is down (every 200 ms here).
    let keepalives = |c: &RawClient| {
        c.received
            .windows(11)
            .filter(|w| w == b":keepalive\n")
            .count()
    };
    let before = keepalives(&client);
    client.read_until_count(b":keepalive\n", before + 3).await;
    broker.start();
    order(&broker, 0, "ann", "two").await;
    client.read_until(b"data: two\n").await;
    assert_eq!(data(&events_of(&client)), ["one", "two"]);
}

#[tokio::test]
async fn a_broker_down_at_connect_gives_503() {
    let mut broker = broker();
    broker.create_topic("orders", 1);
    broker.stop();
    let gateway = kafka_gateway(&broker, json!({"dial_timeout": "500ms"}));
    let response = RawClient::get(gateway.addr, "/orders", &["Connection: close"])
        .await
        .read_to_end()
        .await;
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 503 "), "{text}");
    assert!(text.contains("Retry-After: 5\r\n"), "{text}");
    // General terms to the client; which broker and topic failed, in the log.
    assert!(
        text.ends_with("\r\n\r\nthe stream's source is unavailable; retry later\n"),
        "{text}"
    );
    gateway.process.wait_for_log("kafka topic orders");
}

/// The page, in headless Chromium, shows what is produced to the topic, and after the
/// gateway restarts its EventSource resumes with no event lost or repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_the_topic_live_across_a_gateway_restart() {
    let broker = broker();
    broker.create_topic("orders", 2);
    order(&broker, 0, "ann", "o1").await;
    order(&broker, 1, "bob", "o2").await;
    let mut gateway = kafka_gateway(&broker, json!({}));
    let mut page = PageWatcher::open(&format!(
        "http://{}/www/?stream=/orders&types=order",
        gateway.addr
    ));
    let shown = page.wait_for(2).await;
    assert_eq!(shown["state"], "open", "{shown}");
    order(&broker, 0, "ann", "o3").await;
    let shown = page.wait_for(3).await;
    assert_eq!(shown["data"][2], "o3", "{shown}");

    gateway.restart();
    order(&broker, 1, "bob", "o4").await;
    let shown = page.wait_for(4).await;
    let values = sorted_data(&shown);
    assert_eq!(values, ["o1", "o2", "o3", "o4"], "{shown}");
    assert_eq!(shown["reconnects"], 1, "{shown}");
    assert_eq!(shown["state"], "open", "{shown}");
}

/// A Kafka event's id is the topic's place (the next offset of every partition), so any
/// gateway resumes a client where another left it, exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_gateway_resumes_a_kafka_client_another_one_served_exactly() {
    let broker = broker();
    broker.create_topic("orders", 2);
    let [a, b] = [(); 2].map(|()| kafka_gateway(&broker, json!({})));
    for (partition, value) in [(0, "o1"), (1, "o2"), (0, "o3")] {
        order(&broker, partition, "user", value).await;
    }
    let mut on_a = RawClient::get(a.addr, "/orders", &[]).await;
    on_a.read_until_count(b"event: order\n", 3).await;
    let seen = events_of(&on_a);
    drop(on_a);
    for (partition, value) in [(1, "o4"), (0, "o5")] {
        order(&broker, partition, "user", value).await;
    }
    // Resumed on the other gateway from the second event: the third, then what came since.
    let header = format!("Last-Event-ID: {}", seen[1].id);
    let mut on_b = RawClient::get(b.addr, "/orders", &[&header]).await;
    on_b.read_until_count(b"event: order\n", 3).await;
    order(&broker, 1, "user", "o6").await;
    on_b.read_until(b"data: o6\n").await;
    let mut resumed: Vec<String> = events_of(&on_b).into_iter().map(|e| e.data).collect();
    let live = resumed.pop();
    resumed.sort();
    let mut expected = vec![seen[2].data.clone(), "o4".into(), "o5".into()];
    expected.sort();
    assert_eq!(resumed, expected, "nothing lost, nothing twice");
    assert_eq!(live.as_deref(), Some("o6"));
}

/// The page, in headless Chromium, streams a topic through haproxy from one of two
/// gateways; that gateway is killed, and the browser's EventSource reconnects through
/// haproxy to the other one with its `Last-Event-ID`, and shows every message once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_haproxy_a_browser_resumes_on_the_other_gateway_when_its_own_dies() {
    let broker = broker();
    broker.create_topic("orders", 2);
    let gateways = [(); 2].map(|()| kafka_gateway(&broker, json!({})));
    let balancer = haproxy(&[gateways[0].addr, gateways[1].addr]);
    order(&broker, 0, "user", "m1").await;
    order(&broker, 1, "user", "m2").await;
    let mut page = PageWatcher::open(&format!(
        "http://{}/www/?stream=/orders&types=order",
        balancer.addr
    ));
    let shown = page.wait_for(2).await;
    assert_eq!(shown["state"], "open", "{shown}");
    order(&broker, 0, "user", "m3").await;
    page.wait_for(3).await;

    let streaming = "GET /orders from ";
    let on = |g: &Gateway| g.process.log().contains(streaming);
    let [first, second] = gateways;
    let (serving, other) = match (on(&first), on(&second)) {
        (true, false) => (first, second),
        (false, true) => (second, first),
        both => panic!("the stream is on {both:?}"),
    };
    drop(serving); // SIGKILL: as a crash, no drain
    let deadline = Instant::now() + STEP;
    while page.wait_for(0).await["state"] != "reconnecting" {
        assert!(Instant::now() < deadline, "the page never noticed");
    }
    // Produced while the browser has no stream: the other gateway must fetch them.
    order(&broker, 1, "user", "m4").await;
    order(&broker, 0, "user", "m5").await;
    let shown = page.wait_for(5).await;
    other.process.wait_for_log(streaming);
    let values = sorted_data(&shown);
    assert_eq!(values, ["m1", "m2", "m3", "m4", "m5"], "{shown}");
    assert_eq!(shown["reconnects"], 1, "{shown}");
    assert_eq!(shown["state"], "open", "{shown}");
}
