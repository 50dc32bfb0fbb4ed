//! Criterion benchmarks of the storage engine (`benches/storage.rs`) and of nodes
//! (`benches/produce.rs`, `benches/idle.rs`), in a crate of their own so that, run alone
//! (`cargo bench -p quipu-benches`), they build without the power-loss model that the other
//! crates' tests turn on (`Cargo.toml`). This library holds what the benchmarks share; figures
//! go to `docs/benchmarks.md`.

/// The tokio runtime a benchmark's nodes run on: two worker threads, one for each core of this
/// project's machine (the nodes of one benchmark share them).
///
/// # Panics
/// If the runtime cannot be built (no threads to be had): a benchmark cannot go on without it.
#[must_use]
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}
