//! The Kubernetes manifests keep the admin listener on the node: the ConfigMap's template,
//! filled in as the init container does, is a valid configuration binding admin to loopback.

use crate::common::TempDir;
use turnstone::config::Config;

/// The `turnstone.toml: |` block of the ConfigMap, with its placeholders filled in.
fn configmap_toml() -> String {
    let yaml = include_str!("../../deploy/kubernetes/configmap.yaml");
    let (_, block) = yaml.split_once("turnstone.toml: |\n").unwrap();
    block
        .lines()
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("@POD_IP@", "192.0.2.10")
        .replace("@TURN_SECRET@", "0123456789abcdef0123456789abcdef")
        .replace("@ADMIN_API_KEY@", "0123456789abcdef0123456789abcdef")
}

#[test]
fn the_kubernetes_configmap_binds_the_admin_listener_to_the_nodes_loopback_only() {
    let dir = TempDir::new();
    let config = Config::from_toml(&configmap_toml(), &dir.0)
        .unwrap_or_else(|e| panic!("the ConfigMap's configuration is refused:\n{e}"));
    let admin = config
        .admin
        .expect("the ConfigMap enables the admin listener");
    assert!(
        admin.address.ip().is_loopback(),
        "admin listens on {}",
        admin.address
    );
}
