//! ACLs on the Kafka listener, judged by confluent-kafka: with authorization on, a user without
//! ACLs is denied (produce, create, metadata lists nothing), a prefixed ALLOW lets a user
//! produce, a DENY overrides an ALLOW, and CreateAcls / DescribeAcls / DeleteAcls with filters
//! manage them; over SASL_SSL (SCRAM users) and over SSL with client certificates (the
//! certificate's subject is the principal), and kcat with a client certificate.
#![allow(clippy::unwrap_used)] // tests unwrap

mod common;

use common::*;
use quipu_kafka::{KafkaConfig, SaslMechanism};
use quipu_meta::ScramMechanism;
use quipu_node::{AuthorizationConfig, ControllerRequest};
use quipu_tls::dev::{DevCa, Validity, write};

fn authorization(superuser: &str) -> AuthorizationConfig {
    AuthorizationConfig {
        enabled: true,
        super_users: vec![superuser.to_owned()],
    }
}

/// A listener certificate for 127.0.0.1 and the CA file, in `dir`.
fn broker_tls(
    dir: &std::path::Path,
    client_auth: quipu_tls::ClientAuth,
) -> (
    DevCa,
    std::path::PathBuf,
    std::sync::Arc<quipu_tls::ServerTls>,
) {
    let ca = DevCa::new().unwrap();
    let ca_file = dir.join("ca.pem");
    write(&ca_file, &ca.cert_pem(), false).unwrap();
    let (cert, key) = ca
        .issue_files(dir, "broker", &["127.0.0.1"], Validity::Current)
        .unwrap();
    let ca_for_clients = (client_auth != quipu_tls::ClientAuth::None).then(|| ca_file.clone());
    let tls = quipu_tls::ServerTls::new(
        quipu_tls::ServerFiles {
            cert,
            key,
            ca: ca_for_clients,
        },
        client_auth,
        &[],
    )
    .unwrap();
    (ca, ca_file, tls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acls_deny_by_default_and_allow_what_they_name_over_sasl() {
    let python = python();
    let dir = tempfile::tempdir().unwrap();
    let (_ca, ca_file, tls) = broker_tls(dir.path(), quipu_tls::ClientAuth::None);
    let cluster = Cluster::start_authorized(
        KafkaConfig {
            tls: Some(tls),
            sasl_mechanisms: vec![
                SaslMechanism::Scram(ScramMechanism::Sha256),
                SaslMechanism::Scram(ScramMechanism::Sha512),
            ],
            ..KafkaConfig::default()
        },
        authorization("User:admin"),
    )
    .await;
    let salt = quipu_auth::random_bytes(16);
    let credential =
        quipu_auth::derive_credential(ScramMechanism::Sha256, b"admin-secret", &salt, 4096);
    cluster
        .any()
        .request_controller(ControllerRequest::UpsertScramCredential {
            user: "admin".to_owned(),
            mechanism: ScramMechanism::Sha256,
            credential,
        })
        .await
        .unwrap();
    let script = client_script("acl_client.py");
    let report = run(
        &python,
        &[
            &script,
            "sasl",
            &cluster.bootstrap(),
            ca_file.to_str().unwrap(),
        ],
        None,
    )
    .await;
    let report: serde_json::Value = serde_json::from_str(report.trim()).unwrap();
    // TOPIC_AUTHORIZATION_FAILED is 29.
    assert_eq!(
        report["listed_without_acls"],
        serde_json::json!([]),
        "{report}"
    );
    assert_eq!(report["orders"], 29, "{report}");
    assert_eq!(
        report["listed_with_acls"],
        serde_json::json!(["logs-a"]),
        "{report}"
    );
    assert_eq!(
        report["describe_acls_by_writer"], "CLUSTER_AUTHORIZATION_FAILED",
        "{report}"
    );
    assert_eq!(report["described_by_writer"], 0, "{report}");
    assert_eq!(
        report["matched"],
        serde_json::json!([
            "User:alice WRITE ALLOW PREFIXED",
            "User:bob READ ALLOW LITERAL",
            "User:bob READ DENY LITERAL",
        ]),
        "{report}"
    );
    assert_eq!(report["deleted"], serde_json::json!([1]), "{report}");
    assert_eq!(
        report["left"], 3,
        "alice's write, bob's read and group: {report}"
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_names_the_principal_acls_apply_to() {
    let python = python();
    let dir = tempfile::tempdir().unwrap();
    let (ca, ca_file, tls) = broker_tls(dir.path(), quipu_tls::ClientAuth::Required);
    let (admin_cert, admin_key) = ca
        .issue_files(dir.path(), "admin", &["localhost"], Validity::Current)
        .unwrap();
    let (carol_cert, carol_key) = ca
        .issue_files(dir.path(), "carol", &["localhost"], Validity::Current)
        .unwrap();
    let cluster = Cluster::start_authorized(
        KafkaConfig {
            tls: Some(tls),
            ..KafkaConfig::default()
        },
        authorization("User:CN=admin"),
    )
    .await;
    let script = client_script("acl_client.py");
    let paths = [&ca_file, &admin_cert, &admin_key, &carol_cert, &carol_key]
        .map(|p| p.to_str().unwrap().to_owned());
    let report = run(
        &python,
        &[
            &script,
            "mtls",
            &cluster.bootstrap(),
            &paths[0],
            &paths[1],
            &paths[2],
            &paths[3],
            &paths[4],
        ],
        None,
    )
    .await;
    let report: serde_json::Value = serde_json::from_str(report.trim()).unwrap();
    assert_eq!(
        report["listed_without_acls"],
        serde_json::json!([]),
        "{report}"
    );
    assert_eq!(report["orders"], 29, "{report}");
    assert_eq!(
        report["listed_with_acls"],
        serde_json::json!(["logs-a"]),
        "{report}"
    );
    assert_eq!(
        report["describe_acls_by_writer"], "CLUSTER_AUTHORIZATION_FAILED",
        "{report}"
    );
    assert_eq!(report["described_by_writer"], 0, "{report}");
    // kcat (librdkafka 2.0) with carol's certificate: it sees logs-a only, writes there, and is
    // refused orders.
    let kcat = require("kcat", "install Debian's kcat (apt-get install kcat)");
    let bootstrap = cluster.bootstrap();
    let as_carol = |rest: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = vec![
            "-b".to_owned(),
            bootstrap.clone(),
            "-X".to_owned(),
            "security.protocol=SSL".to_owned(),
            "-X".to_owned(),
            format!("ssl.ca.location={}", paths[0]),
            "-X".to_owned(),
            format!("ssl.certificate.location={}", paths[3]),
            "-X".to_owned(),
            format!("ssl.key.location={}", paths[4]),
            "-m".to_owned(),
            "10".to_owned(),
        ];
        args.extend(rest.iter().map(|a| (*a).to_owned()));
        args
    };
    let listed_args = as_carol(&["-L"]);
    let listed = run(
        &kcat,
        &listed_args.iter().map(String::as_str).collect::<Vec<_>>(),
        None,
    )
    .await;
    assert!(
        listed.contains("topic \"logs-a\"") && !listed.contains("\"orders\""),
        "{listed}"
    );
    let produce = as_carol(&["-P", "-t", "logs-a", "-p", "0"]);
    run(
        &kcat,
        &produce.iter().map(String::as_str).collect::<Vec<_>>(),
        Some(b"from-kcat\n"),
    )
    .await;
    let refused = as_carol(&["-P", "-t", "orders", "-p", "0"]);
    let mut child = tokio::process::Command::new(&kcat)
        .args(&refused)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"not-allowed\n").await.unwrap();
    }
    let status = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(!status.success(), "kcat produced to orders without an ACL");
    cluster.stop().await;
}
