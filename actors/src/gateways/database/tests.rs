//! Pure tests of the gateway's guard path and codecs: no server (the backend's pool connects
//! on first use, and these never use it). The tests against PostgreSQL are in
//! `actors/tests/gateways/database.rs`.

use std::sync::Arc;

use super::*;

fn backend() -> DatabaseBackend {
    DatabaseBackend::connect("postgres://nobody@127.0.0.1:1/none", 1).expect("a valid url")
}

/// Counts what `warden_sql_denied_total` receives, by its `plugin` label.
#[derive(Default)]
struct DeniedCounter {
    counts: std::sync::Mutex<HashMap<String, u64>>,
}

struct DeniedHandle {
    plugin: String,
    counter: Arc<DeniedCounter>,
}

impl metrics::CounterFn for DeniedHandle {
    fn increment(&self, value: u64) {
        let mut counts = self.counter.counts.lock().expect("counts lock");
        *counts.entry(self.plugin.clone()).or_default() += value;
    }

    fn absolute(&self, _: u64) {}
}

struct DeniedRecorder(Arc<DeniedCounter>);

impl metrics::Recorder for DeniedRecorder {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }

    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        if key.name() != "warden_sql_denied_total" {
            return metrics::Counter::noop();
        }
        let plugin = key
            .labels()
            .find(|label| label.key() == "plugin")
            .map(|label| label.value().to_owned())
            .unwrap_or_default();
        metrics::Counter::from_arc(Arc::new(DeniedHandle {
            plugin,
            counter: Arc::clone(&self.0),
        }))
    }

    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }

    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

#[test]
fn every_refusal_is_counted_for_its_plugin() {
    let plugin = "counted".to_owned();
    let grants = ResourceGrants::resolve(&plugin, &["users".to_owned()], &[], &[], None)
        .expect("test grants resolve");
    let mut gateway = DatabaseGateway::new(plugin.clone(), grants, backend());
    let counter = Arc::new(DeniedCounter::default());
    let recorder = DeniedRecorder(Arc::clone(&counter));
    metrics::with_local_recorder(&recorder, || {
        for _ in 0..2 {
            assert!(matches!(
                gateway.check("SELECT * FROM secrets"),
                Err(Error::TableAccessDenied { .. })
            ));
        }
        assert!(matches!(
            gateway.check("DROP SCHEMA public"),
            Err(Error::SqlNotAllowed { .. })
        ));
        let checked = gateway.check("SELECT * FROM users").expect("allowed");
        assert!(
            checked.sql.contains(&format!("\"{plugin}_users\"")),
            "{checked:?}"
        );
        assert!(!checked.changes_schema);
    });
    let counts = counter.counts.lock().expect("counts lock");
    assert_eq!(counts.get(&plugin), Some(&3), "{counts:?}");
}

#[test]
fn numeric_literals_are_recognised() {
    for literal in [
        "1",
        "-1.5",
        "+.5",
        "5.",
        "1e10",
        "1.5E-3",
        "NaN",
        "-Infinity",
        "inf",
    ] {
        assert!(is_numeric_literal(literal), "{literal}");
    }
    for literal in ["", ".", "1e", "e5", "1.2.3", "12a", "--1", "1e+-2", "0x10"] {
        assert!(!is_numeric_literal(literal), "{literal}");
    }
}
