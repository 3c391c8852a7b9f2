use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use tempfile::TempDir;
use weir_store::{Kind, Location, ObjectKey, Store};

use super::parse::split_documents;
use super::{load_dir, refresh, CachedFile, FileSource, FileStamp, LoadReport, Refresh};

const GATEWAY: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: web
  namespace: infra
spec:
  gatewayClassName: weir
  listeners:
  - name: http
    port: 80
    protocol: HTTP
";

const SERVICE: &str = "\
apiVersion: v1
kind: Service
metadata:
  name: echo
spec:
  ports:
  - port: 8080
";

const ROUTE: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: echo
spec:
  parentRefs:
  - name: web
    namespace: infra
";

fn time(second: i64) -> Time {
    Time(Timestamp::from_second(second).unwrap())
}

/// A clock that advances one second per call, starting at 1000.
fn ticking_clock() -> Box<dyn Fn() -> Time + Send> {
    let next = Arc::new(AtomicI64::new(1000));
    Box::new(move || time(next.fetch_add(1, Ordering::SeqCst)))
}

fn write(dir: &TempDir, name: &str, text: &str) {
    let path = dir.path().join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn source(dir: &TempDir) -> FileSource {
    FileSource::new(dir.path(), ticking_clock())
}

fn key(namespace: &str, name: &str) -> ObjectKey {
    ObjectKey::new(namespace, name)
}

fn location(report: &LoadReport, kind: Kind, key: &ObjectKey) -> Location {
    report.store.locations[&(kind, key.clone())].clone()
}

fn messages(report: &LoadReport) -> Vec<String> {
    report.errors.iter().map(ToString::to_string).collect()
}

fn gateway_port(store: &Store) -> i32 {
    store.gateways[&key("infra", "web")].spec.listeners[0].port
}

#[test]
fn splits_documents_at_markers_and_finds_their_first_lines() {
    let text = "# header\n\napiVersion: v1\n---\n# comment\nkind: A\n--- {a: 1}\n----\n---\n# only comments\n---   # c\nx: 1\n";
    let chunks = split_documents(text);
    let summary: Vec<_> = chunks
        .iter()
        .map(|c| (c.first_line, c.start_line))
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, Some(3)),
            (4, Some(6)),
            // Inline content after the marker; "----" is content, not a marker.
            (7, Some(7)),
            (9, None),
            (11, Some(12)),
        ]
    );
    assert_eq!(chunks[2].text, "--- {a: 1}\n----\n");
}

#[test]
fn reads_multi_document_files_with_start_lines() {
    let dir = TempDir::new().unwrap();
    let text = format!(
        "# leading comment\n{SERVICE}---\n\n# the gateway\n{GATEWAY}---\n---\n# nothing here\n---\n{ROUTE}"
    );
    write(&dir, "all.yaml", &text);
    let report = source(&dir).scan();
    assert!(report.errors.is_empty(), "{:?}", messages(&report));
    assert_eq!(report.store.len(), 3);
    let file = dir.path().join("all.yaml");
    let line_of = |needle: &str| text.lines().position(|l| l == needle).unwrap() + 1;
    let service = location(&report, Kind::Service, &key("default", "echo"));
    assert_eq!(
        service,
        Location {
            file: file.clone(),
            line: 2
        }
    );
    let gateway = location(&report, Kind::Gateway, &key("infra", "web"));
    assert_eq!(gateway.line, line_of("kind: Gateway") - 1);
    let route = location(&report, Kind::HttpRoute, &key("default", "echo"));
    assert_eq!(route.line, line_of("kind: HTTPRoute") - 1);
}

#[test]
fn ignores_unknown_kinds_and_accepts_v1beta1() {
    let dir = TempDir::new().unwrap();
    let text = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d}}\n---\n\
         apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: c}}\n---\n\
         apiVersion: v1\nkind: HTTPRoute\nmetadata: {{name: wrong-group}}\n---\n\
         {}",
        ROUTE.replace(
            "gateway.networking.k8s.io/v1",
            "gateway.networking.k8s.io/v1beta1"
        )
    );
    write(&dir, "mixed.yaml", &text);
    let report = source(&dir).scan();
    assert!(report.errors.is_empty(), "{:?}", messages(&report));
    assert_eq!(report.store.len(), 1);
    assert!(report
        .store
        .http_routes
        .contains_key(&key("default", "echo")));
}

#[test]
fn reports_documents_that_are_not_objects() {
    let dir = TempDir::new().unwrap();
    write(
        &dir,
        "bad.yaml",
        "- a list\n---\nkind: Service\nmetadata: {name: x}\n---\napiVersion: v1\nkind: Service\nmetadata: {}\n",
    );
    let report = source(&dir).scan();
    let file = dir.path().join("bad.yaml").display().to_string();
    assert_eq!(report.errors.len(), 3, "{:?}", messages(&report));
    assert!(messages(&report)[0].starts_with(&format!("{file}:1: expected a Kubernetes object")));
    assert!(messages(&report)[1].starts_with(&format!("{file}:3: document has no apiVersion")));
    assert!(messages(&report)[2].starts_with(&format!("{file}:6: Service has no metadata.name")));
    assert!(report.errors.iter().all(|e| e.object.is_none()));
    assert!(report.store.is_empty());
    assert_eq!(report.store.errors.len(), 3);
    assert!(report.store.rejected.is_empty());
}

#[test]
fn namespaced_objects_default_to_the_default_namespace() {
    let dir = TempDir::new().unwrap();
    let class = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata:\n  name: weir\n  namespace: ignored\nspec:\n  controllerName: example.com/weir\n";
    write(&dir, "a.yaml", &format!("{SERVICE}---\n{class}"));
    let report = source(&dir).scan();
    assert!(report.errors.is_empty(), "{:?}", messages(&report));
    let service = &report.store.services[&key("default", "echo")];
    assert_eq!(service.metadata.namespace.as_deref(), Some("default"));
    let class = &report.store.gateway_classes[&ObjectKey::cluster("weir")];
    assert_eq!(class.metadata.namespace, None);
}

#[test]
fn identity_is_set_once_and_generation_follows_the_spec() {
    let dir = TempDir::new().unwrap();
    write(&dir, "gw.yaml", GATEWAY);
    let mut source = source(&dir);
    let first = source.scan();
    let gateway = first.store.gateways[&key("infra", "web")].clone();
    let uid = gateway.metadata.uid.clone().unwrap();
    assert_eq!(uid.len(), 36);
    assert_eq!(gateway.metadata.creation_timestamp, Some(time(1000)));
    assert_eq!(gateway.metadata.generation, Some(1));

    // Nothing changed: the very same store.
    let again = source.scan();
    assert!(!again.changed);
    assert!(Arc::ptr_eq(&first.store, &again.store));

    // Metadata only: new object, same identity, same generation.
    write(
        &dir,
        "gw.yaml",
        &GATEWAY.replace(
            "  namespace: infra\n",
            "  namespace: infra\n  labels: {a: b}\n",
        ),
    );
    let labelled = source.scan();
    assert!(labelled.changed);
    let gateway = &labelled.store.gateways[&key("infra", "web")];
    assert_eq!(gateway.metadata.labels.as_ref().unwrap()["a"], "b");
    assert_eq!(gateway.metadata.uid.as_deref(), Some(uid.as_str()));
    assert_eq!(gateway.metadata.creation_timestamp, Some(time(1000)));
    assert_eq!(gateway.metadata.generation, Some(1));

    // Spec change: generation 2; and back again: 3 (it counts changes).
    write(&dir, "gw.yaml", &GATEWAY.replace("port: 80", "port: 81"));
    let edited = source.scan();
    let gateway = &edited.store.gateways[&key("infra", "web")];
    assert_eq!(gateway.spec.listeners[0].port, 81);
    assert_eq!(gateway.metadata.uid.as_deref(), Some(uid.as_str()));
    assert_eq!(gateway.metadata.creation_timestamp, Some(time(1000)));
    assert_eq!(gateway.metadata.generation, Some(2));
    write(&dir, "gw.yaml", GATEWAY);
    let reverted = source.scan();
    assert_eq!(
        reverted.store.gateways[&key("infra", "web")]
            .metadata
            .generation,
        Some(3)
    );

    // Moved to another file: still the same object.
    std::fs::remove_file(dir.path().join("gw.yaml")).unwrap();
    write(&dir, "moved/gw.yaml", GATEWAY);
    let moved = source.scan();
    let gateway = &moved.store.gateways[&key("infra", "web")];
    assert_eq!(gateway.metadata.uid.as_deref(), Some(uid.as_str()));
    assert_eq!(gateway.metadata.generation, Some(3));

    // Gone from every file, then back: a new object.
    std::fs::remove_file(dir.path().join("moved/gw.yaml")).unwrap();
    assert!(source.scan().store.is_empty());
    write(&dir, "gw.yaml", GATEWAY);
    let recreated = source.scan();
    let gateway = &recreated.store.gateways[&key("infra", "web")];
    assert_ne!(gateway.metadata.uid.as_deref(), Some(uid.as_str()));
    assert_eq!(gateway.metadata.creation_timestamp, Some(time(1001)));
    assert_eq!(gateway.metadata.generation, Some(1));
}

#[test]
fn server_managed_fields_in_manifests_are_ignored() {
    let dir = TempDir::new().unwrap();
    let text = GATEWAY.replace(
        "  namespace: infra\n",
        "  namespace: infra\n  uid: from-the-file\n  generation: 7\n  resourceVersion: \"5\"\n  creationTimestamp: \"2020-01-01T00:00:00Z\"\n",
    ) + "status:\n  conditions: []\n";
    write(&dir, "gw.yaml", &text);
    let report = source(&dir).scan();
    assert!(report.errors.is_empty(), "{:?}", messages(&report));
    let gateway = &report.store.gateways[&key("infra", "web")];
    assert_ne!(gateway.metadata.uid.as_deref(), Some("from-the-file"));
    assert_eq!(gateway.metadata.generation, Some(1));
    assert_eq!(gateway.metadata.resource_version, None);
    assert_eq!(gateway.metadata.creation_timestamp, Some(time(1000)));
    assert_eq!(gateway.status, None);
}

#[test]
fn core_kinds_without_a_generation_get_none() {
    let dir = TempDir::new().unwrap();
    write(&dir, "svc.yaml", SERVICE);
    let report = source(&dir).scan();
    let service = &report.store.services[&key("default", "echo")];
    assert_eq!(service.metadata.generation, None);
    assert!(service.metadata.uid.is_some());
}

#[test]
fn broken_yaml_keeps_the_last_good_version_of_the_file() {
    let dir = TempDir::new().unwrap();
    write(&dir, "app.yaml", &format!("{SERVICE}---\n{GATEWAY}"));
    let mut source = source(&dir);
    let good = source.scan();
    assert_eq!(good.store.len(), 2);

    // The gateway's name (line 12) is mis-indented; the parser notices on line 13.
    let broken = format!(
        "{SERVICE}---\n{}",
        GATEWAY
            .replace("  name: web", "   name: web")
            .replace("port: 80", "port: 81")
    );
    write(&dir, "app.yaml", &broken);
    let report = source.scan();
    assert_eq!(report.errors.len(), 1, "{:?}", messages(&report));
    let error = &report.errors[0];
    assert_eq!(error.location.file, dir.path().join("app.yaml"));
    assert_eq!(error.location.line, 13, "{error}");
    assert!(error.message.starts_with("not valid YAML"), "{error}");
    assert!(error
        .to_string()
        .starts_with(&format!("{}:13: ", dir.path().join("app.yaml").display())));
    // Both objects still served, as they were, each marked as rejected.
    assert_eq!(report.store.len(), 2);
    assert_eq!(gateway_port(&report.store), 80);
    assert!(Arc::ptr_eq(
        &report.store.services[&key("default", "echo")],
        &good.store.services[&key("default", "echo")]
    ));
    for id in [
        (Kind::Service, key("default", "echo")),
        (Kind::Gateway, key("infra", "web")),
    ] {
        assert_eq!(report.store.rejected[&id].location.line, 13);
    }
    assert_eq!(report.store.errors.len(), 1);
    assert_eq!(report.store.errors[0].location, error.location);
    // Reported again while still broken, without a change.
    let still = source.scan();
    assert!(!still.changed);
    assert_eq!(still.errors, report.errors);

    // Fixed: the new version, and no rejections.
    write(
        &dir,
        "app.yaml",
        &broken.replace("   name: web", "  name: web"),
    );
    let fixed = source.scan();
    assert!(fixed.errors.is_empty(), "{:?}", messages(&fixed));
    assert!(fixed.store.rejected.is_empty());
    assert!(fixed.store.errors.is_empty());
    assert_eq!(gateway_port(&fixed.store), 81);
}

#[test]
fn an_alias_bomb_is_refused_and_the_last_good_version_kept() {
    let dir = TempDir::new().unwrap();
    write(&dir, "app.yaml", SERVICE);
    let mut source = source(&dir);
    assert_eq!(source.scan().store.len(), 1);

    // 10 strings, then 8 levels of 10 aliases each: 10^9 strings in about 500 bytes.
    let mut bomb = String::from("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: lol\ndata:\n");
    bomb.push_str("  l0: &l0 [a, a, a, a, a, a, a, a, a, a]\n");
    for level in 1..=8 {
        let refs = vec![format!("*l{}", level - 1); 10].join(", ");
        bomb.push_str(&format!("  l{level}: &l{level} [{refs}]\n"));
    }
    write(&dir, "app.yaml", &format!("{SERVICE}---\n{bomb}"));
    let started = std::time::Instant::now();
    let report = source.scan();
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    assert_eq!(report.errors.len(), 1, "{:?}", messages(&report));
    let error = &report.errors[0];
    assert!(
        error.message.starts_with("refused: YAML aliases expand"),
        "{error}"
    );
    // Located at the document that expands.
    assert_eq!(error.location.line, 9, "{error}");
    assert_eq!(report.store.len(), 1);
    assert!(report
        .store
        .rejected
        .contains_key(&(Kind::Service, key("default", "echo"))));

    // A few aliases are fine.
    write(
        &dir,
        "app.yaml",
        &format!(
            "{SERVICE}---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\n  \
             labels: &labels {{app: web, tier: edge}}\n  annotations: *labels\n"
        ),
    );
    let report = source.scan();
    assert!(report.errors.is_empty(), "{:?}", messages(&report));
    let cm = &report.store.config_maps[&key("default", "cm")];
    assert_eq!(cm.metadata.labels, cm.metadata.annotations);
    assert_eq!(cm.metadata.labels.as_ref().unwrap()["tier"], "edge");
}

#[test]
fn a_file_that_never_parsed_is_reported() {
    let dir = TempDir::new().unwrap();
    write(&dir, "bad.yaml", "a: [1,\n");
    write(&dir, "good.yaml", SERVICE);
    let report = source(&dir).scan();
    assert_eq!(report.store.len(), 1);
    assert_eq!(report.errors.len(), 1);
    assert_eq!(report.errors[0].location.file, dir.path().join("bad.yaml"));
    assert_eq!(report.errors[0].location.line, 2);
}

#[test]
fn an_invalid_object_keeps_its_previous_version_until_fixed() {
    let dir = TempDir::new().unwrap();
    write(&dir, "app.yaml", &format!("{SERVICE}---\n{GATEWAY}"));
    let mut source = source(&dir);
    let good = source.scan();
    let uid = good.store.gateways[&key("infra", "web")]
        .metadata
        .uid
        .clone();

    // The port (line 18 of the file) is not a number; the service is changed and fine.
    let invalid = format!(
        "{}---\n{}",
        SERVICE.replace("8080", "8081"),
        GATEWAY.replace("port: 80", "port: eighty")
    );
    write(&dir, "app.yaml", &invalid);
    let report = source.scan();
    assert!(report.changed);
    assert_eq!(report.errors.len(), 1, "{:?}", messages(&report));
    let id = (Kind::Gateway, key("infra", "web"));
    let error = &report.errors[0];
    assert_eq!(error.object, Some(id.clone()));
    assert_eq!(error.location.line, 18, "{error}");
    assert!(error.message.contains("spec.listeners[0].port"), "{error}");
    assert!(
        error.message.contains("last good version keeps serving"),
        "{error}"
    );
    let rejection = &report.store.rejected[&id];
    assert_eq!(rejection.location, error.location);
    assert_eq!(gateway_port(&report.store), 80);
    assert_eq!(report.store.gateways[&id.1].metadata.uid, uid);
    assert_eq!(
        report.store.services[&key("default", "echo")]
            .spec
            .as_ref()
            .unwrap()
            .ports
            .as_ref()
            .unwrap()[0]
            .port,
        8081
    );

    write(
        &dir,
        "app.yaml",
        &invalid.replace("port: eighty", "port: 82"),
    );
    let fixed = source.scan();
    assert!(fixed.errors.is_empty(), "{:?}", messages(&fixed));
    assert!(fixed.store.rejected.is_empty());
    assert_eq!(gateway_port(&fixed.store), 82);
    assert_eq!(fixed.store.gateways[&id.1].metadata.uid, uid);
    assert_eq!(fixed.store.gateways[&id.1].metadata.generation, Some(2));
}

#[test]
fn an_invalid_new_object_is_rejected_and_not_served() {
    let dir = TempDir::new().unwrap();
    write(
        &dir,
        "gw.yaml",
        &GATEWAY.replace("  gatewayClassName: weir\n", ""),
    );
    let report = source(&dir).scan();
    let id = (Kind::Gateway, key("infra", "web"));
    assert!(report.store.gateways.is_empty());
    assert!(report.store.rejected.contains_key(&id));
    assert_eq!(report.errors.len(), 1);
    assert!(
        report.errors[0].message.contains("gatewayClassName"),
        "{}",
        report.errors[0]
    );
    assert!(
        report.errors[0].message.contains("not served"),
        "{}",
        report.errors[0]
    );
}

#[test]
fn deleting_a_file_deletes_its_objects() {
    let dir = TempDir::new().unwrap();
    write(&dir, "a.yaml", SERVICE);
    write(&dir, "b.yaml", GATEWAY);
    let mut source = source(&dir);
    assert_eq!(source.scan().store.len(), 2);
    std::fs::remove_file(dir.path().join("a.yaml")).unwrap();
    let report = source.scan();
    assert!(report.changed);
    assert_eq!(report.store.len(), 1);
    assert!(report.store.services.is_empty());
    assert!(!report
        .store
        .locations
        .contains_key(&(Kind::Service, key("default", "echo"))));
}

#[test]
fn an_emptied_file_keeps_its_objects_and_is_reported() {
    let dir = TempDir::new().unwrap();
    write(&dir, "app.yaml", &format!("{SERVICE}---\n{GATEWAY}"));
    // A file that was empty from the start is no problem.
    write(&dir, "empty.yaml", "");
    let mut source = source(&dir);
    let good = source.scan();
    assert_eq!(good.store.len(), 2);
    assert!(good.errors.is_empty(), "{:?}", messages(&good));

    // Truncated, as `> app.yaml` does before writing (or blank, or only comments).
    for text in ["", "\n  \n", "# soon\n---\n"] {
        write(&dir, "app.yaml", text);
        let report = source.scan();
        assert_eq!(report.store.len(), 2, "{text:?}");
        assert!(Arc::ptr_eq(
            &report.store.services[&key("default", "echo")],
            &good.store.services[&key("default", "echo")]
        ));
        assert_eq!(report.errors.len(), 1, "{:?}", messages(&report));
        assert!(
            report.errors[0].message.contains("the file is empty"),
            "{}",
            report.errors[0]
        );
        // Each object served from the last good version is marked, as for a syntax error.
        assert!(report
            .store
            .rejected
            .contains_key(&(Kind::Gateway, key("infra", "web"))));
    }

    // Written again: served from the new content, the problem gone.
    write(&dir, "app.yaml", SERVICE);
    let report = source.scan();
    assert_eq!(report.store.len(), 1);
    assert!(report.errors.is_empty(), "{:?}", messages(&report));
    assert!(report.store.rejected.is_empty());

    // Emptied, then deleted: deleting is how objects go.
    write(&dir, "app.yaml", "");
    assert_eq!(source.scan().store.len(), 1);
    std::fs::remove_file(dir.path().join("app.yaml")).unwrap();
    let report = source.scan();
    assert!(report.store.is_empty());
    assert!(report.errors.is_empty(), "{:?}", messages(&report));
}

#[test]
fn a_file_rewritten_to_other_kinds_drops_its_objects() {
    // Not empty: the objects are gone on purpose.
    let dir = TempDir::new().unwrap();
    write(&dir, "app.yaml", SERVICE);
    let mut source = source(&dir);
    assert_eq!(source.scan().store.len(), 1);
    write(
        &dir,
        "app.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\n",
    );
    let report = source.scan();
    assert!(report.store.is_empty());
    assert!(report.errors.is_empty(), "{:?}", messages(&report));
}

#[test]
fn ignores_hidden_and_non_yaml_files_and_reads_subdirectories() {
    let dir = TempDir::new().unwrap();
    write(&dir, ".hidden.yaml", GATEWAY);
    write(&dir, ".git/config.yaml", GATEWAY);
    write(&dir, "sub/.swap.yml", GATEWAY);
    write(&dir, "notes.txt", GATEWAY);
    write(&dir, "gw.yaml~", GATEWAY);
    write(&dir, "README.md", "# hello\n");
    write(&dir, "a/b/c/svc.YML", SERVICE);
    write(&dir, "a/route.yaml", ROUTE);
    let report = source(&dir).scan();
    assert!(report.errors.is_empty(), "{:?}", messages(&report));
    assert_eq!(report.store.len(), 2);
    assert!(report.store.services.contains_key(&key("default", "echo")));
    assert!(report
        .store
        .http_routes
        .contains_key(&key("default", "echo")));
    assert_eq!(
        location(&report, Kind::Service, &key("default", "echo")).file,
        dir.path().join("a/b/c/svc.YML")
    );
}

#[cfg(unix)]
#[test]
fn follows_symlinks_like_a_configmap_mount() {
    let dir = TempDir::new().unwrap();
    write(&dir, "..2024_01_01/svc.yaml", SERVICE);
    std::os::unix::fs::symlink("..2024_01_01", dir.path().join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/svc.yaml", dir.path().join("svc.yaml")).unwrap();
    std::os::unix::fs::symlink("missing.yaml", dir.path().join("dangling.yaml")).unwrap();
    let report = source(&dir).scan();
    assert!(report.errors.is_empty(), "{:?}", messages(&report));
    assert_eq!(report.store.len(), 1);
}

#[test]
fn a_duplicate_object_is_reported_and_the_first_by_path_wins() {
    let dir = TempDir::new().unwrap();
    write(&dir, "a.yaml", SERVICE);
    write(&dir, "b.yaml", &SERVICE.replace("8080", "9090"));
    let report = source(&dir).scan();
    let id = (Kind::Service, key("default", "echo"));
    let service = &report.store.services[&id.1];
    assert_eq!(
        service.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port,
        8080
    );
    assert_eq!(report.store.locations[&id].file, dir.path().join("a.yaml"));
    assert_eq!(report.errors.len(), 1);
    let error = &report.errors[0];
    assert_eq!(error.object, Some(id));
    assert_eq!(
        error.location,
        Location {
            file: dir.path().join("b.yaml"),
            line: 1
        }
    );
    assert!(
        error.message.contains(&format!(
            "already defined at {}:1",
            dir.path().join("a.yaml").display()
        )),
        "{error}"
    );
    // The served object is fine: the problem is the store's, not the object's.
    assert!(report.store.rejected.is_empty());
    assert_eq!(report.store.errors.len(), 1);
    assert_eq!(report.store.errors[0].location, error.location);
}

#[test]
fn rescans_re_read_only_changed_files() {
    let dir = TempDir::new().unwrap();
    write(&dir, "a.yaml", SERVICE);
    let mut source = source(&dir);
    source.scan();
    // Same content rewritten: read again (it is recent), but nothing changed.
    write(&dir, "a.yaml", SERVICE);
    let report = source.scan();
    assert!(!report.changed);
    // Same length, different content, within the same timestamp tick: still noticed.
    write(&dir, "a.yaml", &SERVICE.replace("8080", "8081"));
    let report = source.scan();
    assert!(report.changed);
}

#[test]
fn unchanged_stamps_skip_reading_unless_the_file_is_recent() {
    let dir = TempDir::new().unwrap();
    write(&dir, "a.yaml", SERVICE);
    let path = dir.path().join("a.yaml");
    let stamp = FileStamp::of(&std::fs::metadata(&path).unwrap());
    let mtime = stamp.mtime.unwrap();
    // A cache entry with the file's current stamp but not its content.
    let stale = |read_at| CachedFile {
        stamp: Some(stamp),
        read_at,
        hash: 0,
        docs: Vec::new(),
        error: None,
    };
    // Read long after it was last modified: the stamp is trusted, the file not read.
    let refreshed = refresh(
        &path,
        Some(stale(mtime + std::time::Duration::from_secs(60))),
    );
    assert!(matches!(refreshed, Refresh::Unchanged(file) if file.docs.is_empty()));
    // Read right when it was modified (a coarse clock could hide a later write): re-read.
    let refreshed = refresh(&path, Some(stale(mtime)));
    assert!(matches!(refreshed, Refresh::Changed(file, _) if file.docs.len() == 1));
}

#[test]
fn load_dir_reports_a_missing_directory() {
    let dir = TempDir::new().unwrap();
    let missing = dir.path().join("nope");
    let report = load_dir(&missing, time(5));
    assert!(report.store.is_empty());
    assert_eq!(report.errors.len(), 1);
    assert!(
        report.errors[0].message.contains("does not exist"),
        "{}",
        report.errors[0]
    );

    write(&dir, "svc.yaml", SERVICE);
    let report = load_dir(dir.path(), time(5));
    assert_eq!(
        report.store.services[&key("default", "echo")]
            .metadata
            .creation_timestamp,
        Some(time(5))
    );
    assert!(report.changed);
}

#[test]
fn a_vanished_directory_keeps_serving_until_it_returns() {
    let dir = TempDir::new().unwrap();
    let root = dir.path().join("config");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("svc.yaml"), SERVICE).unwrap();
    let mut source = FileSource::new(&root, ticking_clock());
    assert_eq!(source.scan().store.len(), 1);
    std::fs::remove_dir_all(&root).unwrap();
    let report = source.scan();
    assert_eq!(report.store.len(), 1);
    assert_eq!(report.errors.len(), 1);
    assert!(
        report.errors[0].message.contains("does not exist"),
        "{}",
        report.errors[0]
    );
    // The problem is in the store too (so a rebuild can show it).
    assert!(report.changed);
    assert_eq!(report.store.errors.len(), 1);
    assert!(!source.scan().changed);
    std::fs::create_dir(&root).unwrap();
    let report = source.scan();
    assert!(report.changed);
    assert!(report.store.is_empty());
    assert!(report.errors.is_empty());
    assert!(report.store.errors.is_empty());
}

#[test]
fn a_served_object_is_held_once_and_kept_across_rescans() {
    let dir = TempDir::new().unwrap();
    write(&dir, "a.yaml", ROUTE);
    let mut source = source(&dir);
    let first = source.scan();
    let served = first.store.http_routes[&key("default", "echo")].clone();
    assert!(served.metadata.uid.is_some());
    // The file's cached document is the served object itself, not a second copy of it.
    let cached: Vec<_> = source
        .files
        .values()
        .flat_map(|f| &f.docs)
        .filter_map(|d| match d {
            super::parse::Doc::Object(o) => Some(o.object.clone()),
            _ => None,
        })
        .collect();
    assert!(
        matches!(cached.as_slice(), [weir_store::Object::HttpRoute(o)] if Arc::ptr_eq(o, &served)),
        "{cached:?}"
    );
    // Another file changes: the unchanged route stays the same allocation, same identity.
    write(&dir, "b.yaml", SERVICE);
    let second = source.scan();
    assert!(second.changed);
    assert!(Arc::ptr_eq(
        &second.store.http_routes[&key("default", "echo")],
        &served
    ));
    // Its spec changes: a new object, same uid and creation time, next generation.
    write(
        &dir,
        "a.yaml",
        &ROUTE.replace("namespace: infra", "namespace: other"),
    );
    let third = source.scan();
    let changed = &third.store.http_routes[&key("default", "echo")];
    assert!(!Arc::ptr_eq(changed, &served));
    assert_eq!(changed.metadata.uid, served.metadata.uid);
    assert_eq!(
        changed.metadata.creation_timestamp,
        served.metadata.creation_timestamp
    );
    assert_eq!(changed.metadata.generation, Some(2));
}

#[test]
fn reads_config_maps_backend_tls_policies_and_tcp_routes() {
    let dir = TempDir::new().unwrap();
    write(
        &dir,
        "tls.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ca, namespace: apps}\n\
         data: {ca.crt: pem}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\n\
         metadata: {name: web-tls, namespace: apps}\n\
         spec:\n  targetRefs: [{group: '', kind: Service, name: web}]\n\
         \x20 validation: {hostname: web.example.com, caCertificateRefs: [{group: '', kind: ConfigMap, name: ca}]}\n\
         status: {ancestors: []}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute\n\
         metadata: {name: raw, namespace: apps}\n\
         spec:\n  parentRefs: [{name: gw}]\n  rules: [{backendRefs: [{name: web, port: 9000}]}]\n",
    );
    let report = source(&dir).scan();
    assert!(report.errors.is_empty(), "{:?}", messages(&report));
    let store = &report.store;
    let ca = &store.config_maps[&key("apps", "ca")];
    assert_eq!(ca.data.as_ref().unwrap()["ca.crt"], "pem");
    assert_eq!(
        ca.metadata.generation, None,
        "ConfigMaps have no generation"
    );
    let policy = &store.backend_tls_policies[&key("apps", "web-tls")];
    assert_eq!(policy.spec.validation.hostname, "web.example.com");
    assert_eq!(policy.metadata.generation, Some(1));
    assert!(
        policy.status.is_none(),
        "status is the controller's to write"
    );
    let route = &store.tcp_routes[&key("apps", "raw")];
    assert_eq!(route.spec.rules.len(), 1);
    assert_eq!(route.metadata.generation, Some(1));
}

/// A change to only a BackendTLSPolicy or a ConfigMap is a change of the store (the control
/// loop rebuilds only then): the policy's generation bumps, the ConfigMap's data is new.
#[test]
fn changes_to_policies_and_config_maps_alone_change_the_store() {
    let dir = TempDir::new().unwrap();
    let text = |host: &str, pem: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: ca, namespace: apps}}\n\
             data: {{ca.crt: {pem}}}\n---\n\
             apiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\n\
             metadata: {{name: web-tls, namespace: apps}}\n\
             spec:\n  targetRefs: [{{group: '', kind: Service, name: web}}]\n\
             \x20 validation: {{hostname: {host}, caCertificateRefs: [{{group: '', kind: ConfigMap, name: ca}}]}}\n"
        )
    };
    write(&dir, "tls.yaml", &text("abc.example.com", "one"));
    let mut source = source(&dir);
    let first = source.scan();
    assert!(first.changed);
    // Same length, so only the content tells the versions apart.
    write(&dir, "tls.yaml", &text("foo.example.com", "one"));
    let second = source.scan();
    assert!(second.changed, "a policy change must change the store");
    let policy = &second.store.backend_tls_policies[&key("apps", "web-tls")];
    assert_eq!(policy.spec.validation.hostname, "foo.example.com");
    assert_eq!(policy.metadata.generation, Some(2));
    write(&dir, "tls.yaml", &text("foo.example.com", "two"));
    let third = source.scan();
    assert!(third.changed, "a ConfigMap change must change the store");
    assert_eq!(
        third.store.config_maps[&key("apps", "ca")]
            .data
            .as_ref()
            .unwrap()["ca.crt"],
        "two"
    );
}

#[test]
fn rewriting_files_that_define_the_same_objects_patches_the_store() {
    // Every patched scan is also checked against a full assembly (`check_patch`).
    let dir = TempDir::new().unwrap();
    write(&dir, "a.yaml", &format!("{GATEWAY}---\n{SERVICE}"));
    write(&dir, "b.yaml", ROUTE);
    let mut source = source(&dir);
    let first = source.scan();
    assert!(!first.patched);
    let route_key = key("default", "echo");
    let uid = first.store.http_routes[&route_key].metadata.uid.clone();

    // A spec change: patched, the route's identity kept, the other objects untouched.
    let with_host = format!("{ROUTE}  hostnames: [echo.example]\n");
    write(&dir, "b.yaml", &with_host);
    let edited = source.scan();
    assert!(edited.patched && edited.changed);
    let route = &edited.store.http_routes[&route_key];
    assert_eq!(
        route.spec.hostnames.as_deref(),
        Some(&["echo.example".to_string()][..])
    );
    assert_eq!(route.metadata.uid, uid);
    assert_eq!(route.metadata.generation, Some(2));
    assert!(Arc::ptr_eq(
        &first.store.gateways[&key("infra", "web")],
        &edited.store.gateways[&key("infra", "web")]
    ));

    // Lines shift: the new location is recorded.
    write(&dir, "b.yaml", &format!("# a comment\n{with_host}"));
    let shifted = source.scan();
    assert!(shifted.patched && shifted.changed);
    assert_eq!(location(&shifted, Kind::HttpRoute, &route_key).line, 2);

    // Another object in the file: assembled again.
    write(
        &dir,
        "b.yaml",
        &format!(
            "{with_host}---\n{}",
            ROUTE.replace("name: echo\nspec", "name: two\nspec")
        ),
    );
    let grown = source.scan();
    assert!(!grown.patched && grown.changed);
    assert_eq!(grown.store.http_routes.len(), 2);

    // A broken file, and the fix: assembled again both times.
    write(&dir, "b.yaml", "kind: [unclosed\n");
    let broken = source.scan();
    assert!(!broken.patched);
    assert_eq!(
        broken.store.http_routes.len(),
        2,
        "the last good version keeps serving"
    );
    write(&dir, "b.yaml", &with_host);
    let fixed = source.scan();
    assert!(!fixed.patched);
    assert_eq!(fixed.store.http_routes.len(), 1);
    assert!(fixed.errors.is_empty(), "{:?}", messages(&fixed));

    // A duplicate in a later file: rewriting either file assembles again (the duplicate's
    // error names the first definition's line).
    write(&dir, "c.yaml", ROUTE);
    let duplicated = source.scan();
    assert_eq!(duplicated.errors.len(), 1, "{:?}", messages(&duplicated));
    write(&dir, "b.yaml", &format!("# moved down\n{with_host}"));
    let rewritten_first = source.scan();
    assert!(!rewritten_first.patched);
    assert!(
        messages(&rewritten_first)[0].contains("b.yaml:2"),
        "{:?}",
        messages(&rewritten_first)
    );
    write(&dir, "c.yaml", &format!("# dup\n{ROUTE}"));
    assert!(!source.scan().patched);
}
