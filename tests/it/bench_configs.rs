//! The ghz configurations in `benches/ghz/` stay valid: JSON, a method the server really
//! serves, and request data whose fields exist in the wire contract.

use crate::common;

use common::project;

#[test]
fn ghz_configs_name_real_methods_and_fields() {
    let dir = project().join("benches/ghz");
    let proto = std::fs::read_to_string(project().join("proto/externalscaler.proto")).unwrap();
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let call = config["call"].as_str().unwrap();
        let (service, method) = call.rsplit_once('/').unwrap();
        match service {
            "externalscaler.ExternalScaler" => {
                assert!(
                    proto.contains(&format!("rpc {method}(")),
                    "{}: no rpc {method}",
                    path.display()
                );
                let data = &config["data"];
                let metadata = data["scaledObjectRef"]["scalerMetadata"]
                    .as_object()
                    .or(data["scalerMetadata"].as_object())
                    .unwrap_or_else(|| panic!("{}: no scalerMetadata", path.display()));
                for key in ["source", "metric", "target"] {
                    assert!(metadata.contains_key(key), "{}: {key}", path.display());
                }
            }
            "grpc.health.v1.Health" => assert_eq!(method, "Check"),
            other => panic!("{}: unknown service {other}", path.display()),
        }
        assert_eq!(config["insecure"], true);
        checked += 1;
    }
    assert!(checked >= 4);
}
