//! The threads that do the log stores' blocking work: appends, syncs, reads and resets of the
//! partitions' logs.
//!
//! Why not tokio's blocking pool: every `spawn_blocking` takes one lock that the pool's threads
//! also take to find their next task, and the pool grows a thread for each task that finds none
//! idle. A node with many busy partitions keeps dozens of appends and syncs on their way (one
//! per partition), so it had dozens of such threads, and on a small machine the async workers
//! waited for that lock while its holder waited for a CPU: a `perf` of 480 busy partitions on
//! two cores counted about a thousand such waits a second on the two workers, and the gRPC
//! connections those workers carry stalled meanwhile (`docs/benchmarks.md`, "The log stores'
//! own threads").
//!
//! Here a fixed set of [`THREADS`] threads each take work from a queue of their own; a job goes
//! to the thread with the fewest jobs queued or running, so handing work over takes no lock
//! shared with the threads, and a caller never waits to hand work over.
//!
//! Invariants:
//! - Every job runs once, on one of the threads, and its caller gets its result, or
//!   [`IoThreadLost`] naming the log, with the panic's message if it panicked (the thread goes
//!   on with the next job).
//! - Jobs of one caller run in the order their results are awaited only if the caller awaits
//!   each before submitting the next (as the log store does): two jobs submitted together may
//!   run on different threads at once.
//! - The queues hold at most what callers have submitted and not yet seen answered: a log store
//!   submits one append at a time, its flush task one sync at a time, each of its readers one
//!   read at a time, so the work queued is bounded by the logs a node holds and their readers.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use tokio::sync::oneshot;

/// How many threads do the logs' blocking work. Enough that syncs of different partitions
/// overlap (a disk takes several at once faster than one after another), few enough that they
/// do not crowd the async workers out of the CPUs.
pub(crate) const THREADS: usize = 32;

/// A job did not complete. What it did to its log is unknown.
#[derive(Debug, thiserror::Error)]
pub(crate) enum IoThreadLost {
    /// It panicked (the thread goes on with the next job).
    #[error("blocking work on log {} panicked on its I/O thread: {message}", log.display())]
    Panicked {
        /// The log's directory.
        log: PathBuf,
        /// The panic's message, or that it had none.
        message: String,
    },
    /// Its thread was gone (the threads live as long as the process, so this is not expected).
    #[error("blocking work on log {} did not complete: its I/O thread is gone", log.display())]
    Gone {
        /// The log's directory.
        log: PathBuf,
    },
}

/// A caught panic's message, when its payload has one.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|m| (*m).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}

type Job = Box<dyn FnOnce() + Send>;

struct Lane {
    jobs: mpsc::Sender<Job>,
    /// Jobs queued or running on the lane's thread.
    load: AtomicUsize,
}

struct Threads {
    lanes: Vec<Lane>,
}

fn threads() -> &'static Threads {
    static THREADS_STARTED: OnceLock<Threads> = OnceLock::new();
    THREADS_STARTED.get_or_init(|| {
        let lanes = (0..THREADS)
            .map(|n| {
                let (jobs, queued) = mpsc::channel::<Job>();
                std::thread::Builder::new()
                    .name(format!("quipu-io-{n}"))
                    .spawn(move || {
                        // Ends only with the process: the senders live in a static.
                        while let Ok(job) = queued.recv() {
                            job();
                        }
                    })
                    .expect("cannot start a log I/O thread");
                Lane {
                    jobs,
                    load: AtomicUsize::new(0),
                }
            })
            .collect();
        Threads { lanes }
    })
}

impl Threads {
    /// The lane with the fewest jobs (the first of them, so an idle one if any).
    fn lane(&self) -> &Lane {
        self.lanes
            .iter()
            .min_by_key(|lane| lane.load.load(Ordering::Relaxed))
            .expect("THREADS is above 0")
    }
}

/// Runs `work` on the log in directory `log` on one of the log I/O threads and returns its
/// result.
pub(crate) async fn run<T: Send + 'static>(
    log: &Path,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, IoThreadLost> {
    let (answer, answered) = oneshot::channel();
    let lane = threads().lane();
    lane.load.fetch_add(1, Ordering::Relaxed);
    // The job carries no copy of the log's name: the error is built here, only if there is one.
    let job: Job = Box::new(move || {
        let result = std::panic::catch_unwind(AssertUnwindSafe(work))
            .map_err(|payload| panic_message(payload.as_ref()));
        let _ = answer.send(result);
        lane.load.fetch_sub(1, Ordering::Relaxed);
    });
    let gone = || IoThreadLost::Gone {
        log: log.to_path_buf(),
    };
    if lane.jobs.send(job).is_err() {
        // The threads never stop, so this cannot happen; were one gone, the job was not run.
        lane.load.fetch_sub(1, Ordering::Relaxed);
        return Err(gone());
    }
    match answered.await {
        Ok(Ok(result)) => Ok(result),
        Ok(Err(message)) => Err(IoThreadLost::Panicked {
            log: log.to_path_buf(),
            message,
        }),
        Err(_) => Err(gone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_job_returns_its_result_and_a_panic_is_reported() {
        let log = Path::new("/data/topic-0");
        assert_eq!(run(log, || 7).await.unwrap(), 7);
        let lost = run(log, || -> u32 { panic!("on purpose") }).await;
        let lost = lost.expect_err("the job panicked");
        assert!(lost.to_string().contains("on purpose"), "{lost}");
        assert!(
            lost.to_string().contains("/data/topic-0"),
            "names the log: {lost}"
        );
        // The thread that ran the panicking job still takes work.
        let jobs: Vec<_> = (0..4 * THREADS)
            .map(|n| tokio::spawn(run(log, move || n * 2)))
            .collect();
        for (n, job) in jobs.into_iter().enumerate() {
            assert_eq!(job.await.unwrap().unwrap(), n * 2);
        }
    }

    #[tokio::test]
    async fn jobs_submitted_together_run_at_once() {
        // Jobs that wait for each other finish only if they run at once, on different threads
        // (each gives up after 10 s, so a failure does not hang the test).
        const JOBS: usize = 4;
        let arrived = std::sync::Arc::new((std::sync::Mutex::new(0), std::sync::Condvar::new()));
        let waits: Vec<_> = (0..JOBS)
            .map(|_| {
                let arrived = std::sync::Arc::clone(&arrived);
                tokio::spawn(run(Path::new("/data/topic-0"), move || {
                    let (count, all) = &*arrived;
                    let mut count = count.lock().unwrap();
                    *count += 1;
                    all.notify_all();
                    let (count, _) = all
                        .wait_timeout_while(count, std::time::Duration::from_secs(10), |c| {
                            *c < JOBS
                        })
                        .unwrap();
                    *count == JOBS
                }))
            })
            .collect();
        for met in waits {
            assert!(
                met.await.unwrap().unwrap(),
                "a job waited alone: two shared a thread"
            );
        }
    }
}
