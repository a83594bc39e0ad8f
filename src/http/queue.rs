//! The bounded queue of jobs between the poller and the workers: ready
//! connections, and the watchdog's canary on its way through.
//!
//! A connection waiting for bytes finds no room past [`QUEUE_CAPACITY`]
//! and is turned away; one finishing an answer, or handed back by a worker
//! with input still to work on, always gets in (it is already counted among
//! the open connections, and dropping it would lose a request). A
//! connection just handed a slot for its slow request ([`super::slots`])
//! goes before every other job: it waited in the backlog already.

use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::conn::{Conn, Phase};

/// Ready connections that may wait for a worker; past this a connection
/// that becomes ready is turned away (503 on plain HTTP). Room for a burst
/// of a few thousand new clients at once.
pub(crate) const QUEUE_CAPACITY: usize = 4096;
/// Jobs the queue has room for before it first grows.
const INITIAL_JOBS: usize = 64;

/// Work for a worker.
pub(crate) enum Job {
    /// A connection with something to do.
    Serve(Box<Conn>),
    /// The watchdog's probe: a worker bumps the counter.
    Canary(Arc<AtomicU64>),
}

struct Jobs {
    /// Connections handed a slot for the slow request they hold, in the
    /// order they got it: served first.
    granted: VecDeque<Box<Conn>>,
    jobs: VecDeque<Job>,
    /// Workers asleep, waiting for a job.
    idle: usize,
    closed: bool,
}

/// The queue, and the canary on its way to it.
pub(crate) struct Queue {
    jobs: Mutex<Jobs>,
    available: Condvar,
    /// The watchdog's canary, on its way to the poller, which queues it.
    canary: Mutex<Option<Arc<AtomicU64>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind,
    // still usable; carry on rather than poison every later request.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Queue {
    pub(crate) fn new() -> Queue {
        Queue {
            jobs: Mutex::new(Jobs {
                granted: VecDeque::new(),
                jobs: VecDeque::with_capacity(INITIAL_JOBS),
                idle: 0,
                closed: false,
            }),
            available: Condvar::new(),
            canary: Mutex::new(None),
        }
    }

    /// Queues ready connections for the workers. Those waiting for bytes
    /// find no room past [`QUEUE_CAPACITY`] and are left in `ready`; those
    /// finishing an answer always do.
    #[allow(
        clippy::vec_box,
        reason = "connections move between the table, this list and the queue as boxes, never copied"
    )]
    pub(crate) fn push_ready(&self, ready: &mut Vec<Box<Conn>>) {
        let mut queue = lock(&self.jobs);
        let before = queue.jobs.len();
        let mut refused = Vec::new();
        for conn in ready.drain(..) {
            if queue.jobs.len() >= QUEUE_CAPACITY && conn.phase() != Phase::Writing {
                refused.push(conn);
            } else {
                queue.jobs.push_back(Job::Serve(conn));
            }
        }
        let wake = (queue.jobs.len() - before).min(queue.idle);
        drop(queue);
        *ready = refused;
        // Only workers that sleep need a wake-up; a busy one looks at the
        // queue before it sleeps.
        for _ in 0..wake {
            self.available.notify_one();
        }
    }

    /// Queues one job, whatever the queue holds.
    pub(crate) fn push(&self, job: Job) {
        let mut queue = lock(&self.jobs);
        queue.jobs.push_back(job);
        let wake = queue.idle > 0;
        drop(queue);
        if wake {
            self.available.notify_one();
        }
    }

    /// Queues a connection that was just handed a slot, ahead of every
    /// other job.
    pub(crate) fn push_granted(&self, conn: Box<Conn>) {
        let mut queue = lock(&self.jobs);
        queue.granted.push_back(conn);
        let wake = queue.idle > 0;
        drop(queue);
        if wake {
            self.available.notify_one();
        }
    }

    /// Next job; `None` once the queue is closed and empty.
    pub(crate) fn pop(&self) -> Option<Job> {
        let mut queue = lock(&self.jobs);
        loop {
            if let Some(conn) = queue.granted.pop_front() {
                return Some(Job::Serve(conn));
            }
            if let Some(job) = queue.jobs.pop_front() {
                return Some(job);
            }
            if queue.closed {
                return None;
            }
            queue.idle += 1;
            queue = self
                .available
                .wait(queue)
                .unwrap_or_else(|e| e.into_inner());
            queue.idle -= 1;
        }
    }

    /// No more jobs: workers finish what is queued, then stop.
    pub(crate) fn close(&self) {
        lock(&self.jobs).closed = true;
        self.available.notify_all();
    }

    /// Leaves the watchdog's canary for the poller to forward.
    pub(crate) fn hand_canary(&self, done: Arc<AtomicU64>) {
        *lock(&self.canary) = Some(done);
    }

    /// Takes the canary the watchdog left, if any, and queues it.
    pub(crate) fn forward_canary(&self) {
        if let Some(done) = lock(&self.canary).take() {
            self.push(Job::Canary(done));
        }
    }
}
