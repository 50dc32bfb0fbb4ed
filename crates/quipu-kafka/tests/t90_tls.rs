//! The Kafka listener over TLS with client certificates required (Kafka's SSL listener with
//! `ssl.client.auth=required`): confluent-kafka, kafka-python and kcat produce and consume with a
//! certificate of the CA; kcat without a certificate, with an expired one, with another CA's, or
//! in plaintext gets nothing.
#![allow(clippy::unwrap_used)] // tests unwrap

mod common;

use common::*;
use quipu_kafka::KafkaConfig;
use quipu_tls::dev::{DevCa, Validity, write};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_clients_speak_tls_with_a_certificate_of_the_ca_and_nobody_else_does() {
    let kcat = require("kcat", "install Debian's kcat (apt-get install kcat)");
    let python = python();
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::new().unwrap();
    let ca_file = dir.path().join("ca.pem");
    write(&ca_file, &ca.cert_pem(), false).unwrap();
    let (server_cert, server_key) = ca
        .issue_files(
            dir.path(),
            "broker",
            &["127.0.0.1", "localhost"],
            Validity::Current,
        )
        .unwrap();
    let tls = quipu_tls::ServerTls::new(
        quipu_tls::ServerFiles {
            cert: server_cert,
            key: server_key,
            ca: Some(ca_file.clone()),
        },
        quipu_tls::ClientAuth::Required,
        &[],
    )
    .unwrap();
    let cluster = Cluster::start(KafkaConfig {
        tls: Some(tls),
        ..KafkaConfig::default()
    })
    .await;
    let bootstrap = cluster.bootstrap();
    let node = cluster.nodes[0].node.as_ref().unwrap();
    for topic in ["tls-confluent-kafka", "tls-kafka-python"] {
        node.create_topic(topic, 1, 3).await.unwrap();
        cluster.wait_for_leaders(topic).await;
    }
    let (client_cert, client_key) = ca
        .issue_files(dir.path(), "alice", &["alice"], Validity::Current)
        .unwrap();
    let (ca_s, cert_s, key_s) = (
        ca_file.to_str().unwrap(),
        client_cert.to_str().unwrap(),
        client_key.to_str().unwrap(),
    );

    for client in ["confluent-kafka", "kafka-python"] {
        let topic = format!("tls-{client}");
        let script = client_script("tls_client.py");
        let report = run(
            &python,
            &[
                &script, client, &bootstrap, &topic, ca_s, cert_s, key_s, "200",
            ],
            None,
        )
        .await;
        let report: serde_json::Value = serde_json::from_str(report.trim()).unwrap();
        assert_eq!(report["consumed"], 200, "{client}: {report}");
    }

    // kcat with the client certificate reads what the Python clients wrote.
    let ssl = |cert: Option<(&str, &str)>| {
        let mut args = vec![
            "-b".to_owned(),
            bootstrap.clone(),
            "-X".to_owned(),
            "security.protocol=SSL".to_owned(),
            "-X".to_owned(),
            format!("ssl.ca.location={ca_s}"),
        ];
        if let Some((cert, key)) = cert {
            args.extend([
                "-X".to_owned(),
                format!("ssl.certificate.location={cert}"),
                "-X".to_owned(),
                format!("ssl.key.location={key}"),
            ]);
        }
        args
    };
    let mut consume = ssl(Some((cert_s, key_s)));
    consume.extend(
        [
            "-C",
            "-t",
            "tls-kafka-python",
            "-p",
            "0",
            "-o",
            "beginning",
            "-c",
            "200",
            "-e",
        ]
        .map(str::to_owned),
    );
    let consume: Vec<&str> = consume.iter().map(String::as_str).collect();
    let read = run(&kcat, &consume, None).await;
    assert_eq!(read.lines().count(), 200, "{read}");
    assert_eq!(read.lines().next(), Some("secret-0"));

    // Refused: no client certificate, an expired one, another CA's, plaintext.
    let metadata = |mut args: Vec<String>| {
        args.extend(["-L", "-m", "5"].map(str::to_owned));
        args
    };
    let (old_cert, old_key) = ca
        .issue_files(dir.path(), "old", &["old"], Validity::Expired)
        .unwrap();
    let stranger = DevCa::new().unwrap();
    let (other_cert, other_key) = stranger
        .issue_files(dir.path(), "mallory", &["mallory"], Validity::Current)
        .unwrap();
    let (old_cert, old_key) = (old_cert.to_str().unwrap(), old_key.to_str().unwrap());
    let (other_cert, other_key) = (other_cert.to_str().unwrap(), other_key.to_str().unwrap());
    let attempts: Vec<(&str, Vec<String>)> = vec![
        ("no client certificate", metadata(ssl(None))),
        (
            "an expired certificate",
            metadata(ssl(Some((old_cert, old_key)))),
        ),
        (
            "another CA's certificate",
            metadata(ssl(Some((other_cert, other_key)))),
        ),
        (
            "plaintext",
            metadata(vec!["-b".to_owned(), bootstrap.clone()]),
        ),
    ];
    for (what, args) in attempts {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert!(!succeeds(&kcat, &args).await, "kcat with {what} was served");
    }
    let ok = metadata(ssl(Some((cert_s, key_s))));
    let ok: Vec<&str> = ok.iter().map(String::as_str).collect();
    assert!(
        succeeds(&kcat, &ok).await,
        "the good certificate still works"
    );
    cluster.stop().await;
}
