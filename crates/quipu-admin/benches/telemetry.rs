//! What the metrics cost a produce: one partition produce's recording
//! (`quipu_node::telemetry::produced`: two counters and a histogram sample) with the Prometheus
//! recorder the binary installs, against the same call with no recorder (the facade's no-op),
//! and one fetch's. Compare with a produce's own cost in `docs/benchmarks.md`.
#![allow(clippy::unwrap_used)] // benches unwrap

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use metrics_exporter_prometheus::PrometheusBuilder;
use quipu_node::telemetry::{Api, fetched, produced};

fn recording(c: &mut Criterion) {
    let took = Duration::from_micros(800);
    c.bench_function("produce recorded, no recorder", |b| {
        b.iter(|| produced(Api::Kafka, true, 16_384, took));
    });
    let recorder = PrometheusBuilder::new()
        .set_buckets(&[0.001, 0.01, 0.1, 1.0])
        .unwrap()
        .build_recorder();
    metrics::with_local_recorder(&recorder, || {
        c.bench_function("produce recorded, Prometheus recorder", |b| {
            b.iter(|| produced(Api::Kafka, true, 16_384, took));
        });
        c.bench_function("fetch recorded, Prometheus recorder", |b| {
            b.iter(|| fetched(Api::Grpc, 1 << 20));
        });
    });
}

criterion_group!(benches, recording);
criterion_main!(benches);
