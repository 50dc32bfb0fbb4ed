//! Criterion benchmarks of the storage engine (`benches/storage.rs`) and of nodes (`benches/produce.rs`,
//! `benches/idle.rs`), in a crate of their own so that they run without the power-loss model that
//! the other crates' tests turn on (`Cargo.toml`). This library is empty; figures go to
//! `docs/benchmarks.md`.
