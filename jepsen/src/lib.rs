//! Quipu's fault-injection harness (`docs/reliability.md`): real `quipu server` processes in
//! network namespaces, a nemesis that partitions, kills, pauses, cuts power, corrupts disks and
//! skews clocks, a workload whose every operation is recorded in a history, and a checker that
//! finds lost, duplicated, reordered and diverging records in that history alone.
//!
//! Code map:
//! - [`net`]: namespaces, the bridge, nftables partitions, the leftover sweep;
//! - [`cluster`]: the server processes;
//! - [`nemesis`]: faults, their schedule, apply and heal;
//! - [`workload`]: producers, consumers, final drains and replica reads (in the client namespace);
//! - [`history`]: the JSONL history;
//! - [`checker`]: the anomaly rules;
//! - [`run`]: one scenario start to end.

pub mod checker;
pub mod cluster;
pub mod history;
pub mod nemesis;
pub mod net;
pub mod rng;
pub mod run;
pub mod workload;
