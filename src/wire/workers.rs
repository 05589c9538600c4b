//! The threads that run the service core, one per HSM session.
//!
//! Each request's service call (store, policy, PKCS#11) runs on one of a fixed
//! set of threads fed from one queue. There are as many threads as sessions, so a thread
//! never waits for a session that another thread holds, and under load a thread that
//! finishes a request takes the next one from the queue without sleeping: no thread hands a
//! session to another, and no request pays for waking one. The queue is also admission
//! control: a request that is not started within `wait` is answered `ThrottlingException`.
//!
//! Key generation has a lane of its own ([`Lanes`]): an RSA 4096 key pair can take seconds
//! on SoftHSM2, and on the request threads it would stall every request queued behind it.
//!
//! The threads run under Linux's `SCHED_BATCH` unless told otherwise ([`Scheduling`]): a
//! core thread that wakes from an HSM round trip then waits for the running one to block or
//! use up its slice, instead of preempting it. The running thread is often inside the
//! PKCS#11 library holding one of its locks, and preempting it there makes every other
//! thread that needs the lock sleep and wake again. With 64 sessions on 2 CPUs, batch
//! scheduling cut a delayed ReEncrypt from about 325 to 285 µs of CPU (README, Benchmarks).

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::api::Operation;
use crate::error::KmsError;

/// Threads for the operations that generate keys. The HSM gives key-pair generation one
/// session of its own, so a second thread keeps symmetric CreateKey moving meanwhile.
const GENERATION_THREADS: usize = 2;

/// A core thread the OS would not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot start thread {thread}")]
pub struct ThreadStartError {
    pub thread: String,
    #[source]
    pub source: std::io::Error,
}

/// The request lanes: cryptographic and other requests on one thread per session, key
/// generation on its own.
pub struct Lanes {
    requests: CoreWorkers,
    generation: CoreWorkers,
}

impl Lanes {
    pub fn start(
        session_pool_size: usize,
        wait: Duration,
        scheduling: Scheduling,
    ) -> Result<Lanes, ThreadStartError> {
        Ok(Lanes {
            requests: CoreWorkers::start("p11kms-core", session_pool_size, wait, scheduling)?,
            generation: CoreWorkers::start("p11kms-keygen", GENERATION_THREADS, wait, scheduling)?,
        })
    }

    /// The lane `operation` runs on.
    pub fn for_operation(&self, operation: Operation) -> &CoreWorkers {
        match operation {
            Operation::CreateKey
            | Operation::GenerateDataKeyPair
            | Operation::GenerateDataKeyPairWithoutPlaintext => &self.generation,
            _ => &self.requests,
        }
    }
}

/// The kernel scheduling policy of the core threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheduling {
    /// `SCHED_BATCH`: no preemption on wake-up (Linux; elsewhere the same as `Normal`).
    Batch,
    /// The process's own policy, usually `SCHED_OTHER`.
    Normal,
}

impl Scheduling {
    /// Applies the policy to the calling thread. Failure (a sandbox that forbids
    /// `sched_setscheduler`, say) costs only speed, so it is logged and the thread goes on.
    fn apply_to_current_thread(self) {
        #[cfg(target_os = "linux")]
        if self == Scheduling::Batch {
            use thread_priority::unix::{
                set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy,
                ThreadSchedulePolicy,
            };
            use thread_priority::{ThreadPriority, ThreadPriorityOsValue};
            // SCHED_BATCH takes static priority 0; the nice value stays 0, the default.
            if let Err(e) = set_thread_priority_and_policy(
                thread_native_id(),
                ThreadPriority::Os(ThreadPriorityOsValue::default()),
                ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Batch),
            ) {
                tracing::warn!(error = ?e, "cannot give a core thread SCHED_BATCH; it keeps the default policy");
            }
        }
    }
}

const QUEUED: u8 = 0;
const STARTED: u8 = 1;
const ABANDONED: u8 = 2;

/// Handing a result back wakes the async worker waiting for it, and with the async side
/// idle that costs the core thread a system call each time: 5-9 µs, several percent of a
/// SoftHSM2 request. While requests keep queuing, a core thread hands back its results in
/// batches instead: at most this many ...
const REPLY_BATCH: usize = 4;
/// ... held at most this long, ...
const REPLY_HOLD: Duration = Duration::from_micros(250);
/// ... and only while at least this many requests wait, so that holding results never
/// leaves the queue to run dry.
const HOLD_WHILE_QUEUED: usize = 4;

/// A queued request: runs unless the waiting side gave up on it first, and returns what
/// hands its result back.
struct Job {
    state: Arc<AtomicU8>,
    run: Box<dyn FnOnce() -> Reply + Send>,
}

type Reply = Box<dyn FnOnce() + Send>;

/// Handle to the core threads; dropping the last one lets them finish and exit.
pub struct CoreWorkers {
    queue: crossbeam_channel::Sender<Job>,
    wait: Duration,
}

impl CoreWorkers {
    /// Starts `threads` threads named `name-N`.
    pub fn start(
        name: &str,
        threads: usize,
        wait: Duration,
        scheduling: Scheduling,
    ) -> Result<CoreWorkers, ThreadStartError> {
        let (queue, jobs) = crossbeam_channel::unbounded::<Job>();
        for n in 0..threads.max(1) {
            let jobs = jobs.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{n}"))
                .spawn(move || {
                    scheduling.apply_to_current_thread();
                    serve(&jobs)
                })
                .map_err(|source| ThreadStartError {
                    thread: format!("{name}-{n}"),
                    source,
                })?;
        }
        Ok(CoreWorkers { queue, wait })
    }

    /// Runs `work` on a core thread and returns its result. A request still queued after
    /// the wait is throttled (and never runs); one that has started is always waited for,
    /// so its result and audit record are never lost.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, KmsError> {
        let (done, result) = tokio::sync::oneshot::channel();
        let state = Arc::new(AtomicU8::new(QUEUED));
        let job = Job {
            state: state.clone(),
            run: Box::new(move || {
                let outcome = std::panic::catch_unwind(AssertUnwindSafe(work));
                Box::new(move || {
                    let _ = done.send(outcome.map_err(|_| ()));
                })
            }),
        };
        if self.queue.send(job).is_err() {
            return Err(KmsError::Internal("the core threads have stopped".into()));
        }
        let mut result = result;
        let outcome = match tokio::time::timeout(self.wait, &mut result).await {
            Ok(outcome) => outcome,
            Err(_elapsed) => {
                if state
                    .compare_exchange(QUEUED, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return Err(KmsError::Throttled);
                }
                // Started in the meantime: wait for it to finish.
                result.await
            }
        };
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(())) => Err(KmsError::Internal("a core thread panicked".into())),
            Err(_) => Err(KmsError::Internal("a core thread dropped a request".into())),
        }
    }
}

/// A core thread's loop: runs the jobs it takes and hands their results back, in batches
/// while the queue is long (see [`REPLY_BATCH`]).
fn serve(jobs: &crossbeam_channel::Receiver<Job>) {
    let mut held: Vec<Reply> = Vec::with_capacity(REPLY_BATCH);
    let mut oldest = Instant::now();
    loop {
        let job = match jobs.try_recv() {
            Ok(job) => job,
            Err(crossbeam_channel::TryRecvError::Empty) => {
                hand_back(&mut held);
                match jobs.recv() {
                    Ok(job) => job,
                    Err(_) => break,
                }
            }
            Err(crossbeam_channel::TryRecvError::Disconnected) => break,
        };
        if job
            .state
            .compare_exchange(QUEUED, STARTED, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            continue;
        }
        if held.is_empty() {
            oldest = Instant::now();
        }
        held.push((job.run)());
        if held.len() >= REPLY_BATCH
            || jobs.len() < HOLD_WHILE_QUEUED
            || oldest.elapsed() >= REPLY_HOLD
        {
            hand_back(&mut held);
        }
    }
    hand_back(&mut held);
}

fn hand_back(held: &mut Vec<Reply>) {
    for reply in held.drain(..) {
        reply();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    #[test]
    fn runs_work_and_returns_its_result() {
        let workers =
            CoreWorkers::start("test", 2, Duration::from_secs(5), Scheduling::Normal).unwrap();
        let value = runtime().block_on(workers.run(|| 6 * 7)).unwrap();
        assert_eq!(value, 42);
    }

    #[test]
    fn results_held_while_the_queue_is_long_all_come_back() {
        let workers = Arc::new(
            CoreWorkers::start("test", 1, Duration::from_secs(5), Scheduling::Normal).unwrap(),
        );
        let all = runtime().block_on(async {
            tokio::time::timeout(Duration::from_secs(10), async {
                let mut set = tokio::task::JoinSet::new();
                for n in 0..64u32 {
                    let workers = workers.clone();
                    set.spawn(async move {
                        workers
                            .run(move || {
                                std::thread::sleep(Duration::from_micros(50));
                                n
                            })
                            .await
                    });
                }
                let mut out = Vec::new();
                while let Some(joined) = set.join_next().await {
                    out.push(joined.unwrap().unwrap());
                }
                out
            })
            .await
        });
        let mut all = all.expect("a held result never came back");
        all.sort();
        assert_eq!(all, (0..64).collect::<Vec<_>>());
    }

    /// The policy the core threads actually run under, as the kernel reports it.
    #[cfg(target_os = "linux")]
    fn policy_of_a_core_thread(scheduling: Scheduling) -> thread_priority::ThreadSchedulePolicy {
        let workers = CoreWorkers::start("test", 1, Duration::from_secs(5), scheduling).unwrap();
        runtime()
            .block_on(workers.run(thread_priority::unix::thread_schedule_policy))
            .unwrap()
            .unwrap()
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn core_threads_run_under_the_chosen_policy() {
        use thread_priority::unix::{NormalThreadSchedulePolicy, ThreadSchedulePolicy};
        assert_eq!(
            policy_of_a_core_thread(Scheduling::Batch),
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Batch)
        );
        assert_eq!(
            policy_of_a_core_thread(Scheduling::Normal),
            thread_priority::unix::thread_schedule_policy().unwrap(),
            "Normal keeps the policy the threads inherit"
        );
    }

    #[test]
    fn a_panic_becomes_an_internal_error_and_the_thread_lives_on() {
        let workers =
            CoreWorkers::start("test", 1, Duration::from_secs(5), Scheduling::Normal).unwrap();
        let rt = runtime();
        let error = rt
            .block_on(workers.run(|| -> u8 { panic!("boom") }))
            .unwrap_err();
        assert!(matches!(error, KmsError::Internal(_)), "{error:?}");
        assert_eq!(rt.block_on(workers.run(|| 1)).unwrap(), 1);
    }

    #[test]
    fn a_request_queued_past_the_wait_is_throttled_and_never_runs() {
        let workers = Arc::new(
            CoreWorkers::start("test", 1, Duration::from_millis(50), Scheduling::Normal).unwrap(),
        );
        let ran = Arc::new(AtomicUsize::new(0));
        let rt = runtime();
        let (release, blocked) = std::sync::mpsc::channel::<()>();
        let busy = {
            let workers = workers.clone();
            std::thread::spawn(move || {
                runtime().block_on(workers.run(move || {
                    let _ = blocked.recv_timeout(Duration::from_secs(10));
                }))
            })
        };
        // Let the only thread pick up the blocking job first.
        std::thread::sleep(Duration::from_millis(20));
        let counter = ran.clone();
        let error = rt
            .block_on(workers.run(move || {
                counter.fetch_add(1, Ordering::SeqCst);
            }))
            .unwrap_err();
        assert!(matches!(error, KmsError::Throttled), "{error:?}");
        release.send(()).unwrap();
        // The blocking job started before its wait ran out, so it completes normally.
        assert!(busy.join().unwrap().is_ok());
        rt.block_on(workers.run(|| ())).unwrap();
        assert_eq!(ran.load(Ordering::SeqCst), 0, "an abandoned request ran");
    }
}
