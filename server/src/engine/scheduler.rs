//! The reconcile scheduler: a work queue keyed by application (the shape of kube-runtime's
//! controller), N workers, per-application backoff, and leases so that one replica at a time
//! reconciles an application.
//!
//! Triggers enqueue one application, never all of them: its interval (±10 % jitter, counted
//! from its last reconcile), a newly rendered target (a change event, from whichever replica
//! polled Git), a watch event on one of its own objects (by tracking annotation), a webhook
//! (through the Git poller) or a person's click. An application is in the queue at most once;
//! enqueued while a worker reconciles it, it runs once more afterwards. A failing application
//! waits 5 s, 10 s, 20 s … up to 5 min between attempts, and says so on its page; one slow
//! application holds one worker, never the others.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::clock;
use crate::cluster::client::ClusterClient;
use crate::reconcile::{self, AppLocks, ReconcileError};
use crate::store::{AppStatus, Change, Store, StoreError, HEARTBEAT_MS, REPLICA_TIMEOUT_MS};
use crate::telemetry::Metrics;

/// How long a burst of triggers (a rollout's watch events) settles before the compare.
pub const DEBOUNCE: Duration = Duration::from_millis(250);
/// The first retry after a failure; doubled per consecutive failure up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(5);
/// The longest wait between attempts of a failing application.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How soon an application whose sync another replica or person is running is tried again.
const BUSY_RETRY: Duration = Duration::from_secs(2);

/// `interval` ± 10 %, so many applications (or many replicas) do not compare in lockstep.
pub fn jittered(interval: Duration) -> Duration {
    let random = uuid::Uuid::new_v4().as_u128() % 2001; // 0..=2000
    let factor = 0.9 + (random as f64) / 10_000.0; // 0.9..=1.1
    interval.mul_f64(factor)
}

/// The wait before attempt `failures + 1` after `failures` consecutive failures (≥ 1).
pub fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    FIRST_BACKOFF
        .saturating_mul(1u32 << doublings)
        .min(MAX_BACKOFF)
}

#[derive(Default)]
struct QueueState {
    /// Due now, in order.
    ready: VecDeque<String>,
    /// Members of `ready`.
    queued: HashSet<String>,
    /// Being reconciled by a worker.
    running: HashSet<String>,
    /// Enqueued while running: runs once more when its worker is done.
    again: HashSet<String>,
    /// Due later, by (when, sequence).
    delayed: BTreeMap<(Instant, u64), String>,
    /// Each delayed application's key in `delayed` (one entry per application).
    due: HashMap<String, (Instant, u64)>,
    seq: u64,
}

impl QueueState {
    fn push_ready(&mut self, app: &str) {
        if let Some(key) = self.due.remove(app) {
            self.delayed.remove(&key);
        }
        if self.running.contains(app) {
            self.again.insert(app.to_owned());
        } else if self.queued.insert(app.to_owned()) {
            self.ready.push_back(app.to_owned());
        }
    }

    fn promote_due(&mut self, now: Instant) {
        while let Some((&key, _)) = self.delayed.first_key_value() {
            if key.0 > now {
                break;
            }
            if let Some(app) = self.delayed.remove(&key) {
                self.due.remove(&app);
                self.push_ready(&app);
            }
        }
    }
}

/// Applications waiting to be reconciled; cheap to clone (all clones are one queue).
#[derive(Clone, Default)]
pub struct WorkQueue {
    state: Arc<Mutex<QueueState>>,
    wake: Arc<Notify>,
}

impl WorkQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reconciles `app` as soon as a worker is free (once more after the current run if one
    /// is under way).
    pub fn enqueue(&self, app: &str) {
        self.lock().push_ready(app);
        self.wake.notify_waiters();
    }

    /// Reconciles `app` after `delay`, or earlier if it is already due earlier.
    pub fn enqueue_after(&self, app: &str, delay: Duration) {
        let at = Instant::now() + delay;
        {
            let mut s = self.lock();
            if s.queued.contains(app) {
                return;
            }
            if let Some(&key) = s.due.get(app) {
                if key.0 <= at {
                    return;
                }
                s.delayed.remove(&key);
            }
            s.seq += 1;
            let key = (at, s.seq);
            s.delayed.insert(key, app.to_owned());
            s.due.insert(app.to_owned(), key);
        }
        self.wake.notify_waiters();
    }

    /// Waits for the next due application and marks it running.
    pub async fn next(&self) -> String {
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let earliest = {
                let mut s = self.lock();
                s.promote_due(Instant::now());
                if let Some(app) = s.ready.pop_front() {
                    s.queued.remove(&app);
                    s.running.insert(app.clone());
                    return app;
                }
                s.delayed.first_key_value().map(|(k, _)| k.0)
            };
            match earliest {
                Some(at) => {
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Marks `app` no longer running (and queues it again if it was enqueued meanwhile).
    pub fn done(&self, app: &str) {
        {
            let mut s = self.lock();
            s.running.remove(app);
            if s.again.remove(app) {
                s.push_ready(app);
            }
        }
        self.wake.notify_waiters();
    }

    /// Forgets `app` (deleted): drops any scheduled run.
    pub fn forget(&self, app: &str) {
        let mut s = self.lock();
        if let Some(key) = s.due.remove(app) {
            s.delayed.remove(&key);
        }
        s.again.remove(app);
    }

    /// (queued now, scheduled later, running) — for metrics and tests.
    pub fn depth(&self) -> (usize, usize, usize) {
        let s = self.lock();
        (s.ready.len(), s.delayed.len(), s.running.len())
    }
}

/// What the scheduler needs from the running service.
pub struct Scheduler {
    pub store: Store,
    pub clusters: Arc<HashMap<String, Arc<ClusterClient>>>,
    pub queue: WorkQueue,
    pub locks: AppLocks,
    pub metrics: Arc<Metrics>,
    /// Time between comparisons of one application (jittered).
    pub interval: Duration,
    /// Workers (applications reconciled at once).
    pub concurrency: usize,
    failures: Mutex<HashMap<String, u32>>,
    /// This replica's lease share as of the last heartbeat (counted there, not per reconcile).
    share: Mutex<Share>,
}

/// Leases this replica holds, its fair share and the live replicas, from the last heartbeat
/// (kept current between heartbeats as leases are taken and given back).
#[derive(Debug, Clone, Copy)]
struct Share {
    mine: i64,
    fair: i64,
    replicas: i64,
}

impl Scheduler {
    /// A scheduler over `queue`; nothing runs until [`Scheduler::spawn`].
    pub fn new(
        store: Store,
        clusters: Arc<HashMap<String, Arc<ClusterClient>>>,
        queue: WorkQueue,
        locks: AppLocks,
        metrics: Arc<Metrics>,
        interval: Duration,
        concurrency: usize,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            clusters,
            queue,
            locks,
            metrics,
            interval,
            concurrency: concurrency.max(1),
            failures: Mutex::new(HashMap::new()),
            // Until the first heartbeat counts, free leases may be taken.
            share: Mutex::new(Share {
                mine: 0,
                fair: i64::MAX,
                replicas: 1,
            }),
        })
    }

    /// Starts the workers, the trigger listeners and the replica heartbeat (which also takes
    /// over applications and syncs of replicas that stopped). Abort the handles to stop.
    pub fn spawn(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        for _ in 0..self.concurrency {
            let this = self.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let app = this.queue.next().await;
                    this.run_one(&app).await;
                    this.queue.done(&app);
                }
            }));
        }
        // Watch events on an application's own objects.
        for cluster in self.clusters.values() {
            let mut events = cluster.events();
            let this = self.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    match events.recv().await {
                        Ok(app) => this.queue.enqueue_after(&app, DEBOUNCE),
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            this.enqueue_all(DEBOUNCE).await
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    }
                }
            }));
        }
        // New targets rendered by whichever replica polls Git.
        {
            let mut changes = self.store.changes();
            let this = self.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    match changes.recv().await {
                        Ok(Change::Target(app)) => this.queue.enqueue_after(&app, DEBOUNCE),
                        Ok(_) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            this.enqueue_all(DEBOUNCE).await
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    }
                }
            }));
        }
        // Heartbeat, orphaned syncs, unleased applications.
        {
            let this = self.clone();
            tasks.push(tokio::spawn(async move {
                let mut tick =
                    tokio::time::interval(Duration::from_millis(HEARTBEAT_MS.unsigned_abs()));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    if let Err(e) = this.beat().await {
                        tracing::warn!(error = %e, "replica heartbeat failed");
                    }
                }
            }));
        }
        tasks
    }

    /// Queues every application (start-up, lost events).
    pub async fn enqueue_all(&self, delay: Duration) {
        match self.store.app_sources().await {
            Ok(apps) => {
                for app in apps {
                    self.queue.enqueue_after(&app.name, delay);
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot list applications"),
        }
    }

    /// One heartbeat: say this replica is alive (renewing its leases and running syncs), close
    /// syncs whose replica stopped beating, and queue applications nobody holds.
    pub async fn beat(&self) -> Result<(), StoreError> {
        let now = clock::now();
        self.store.heartbeat(now).await?;
        let (mine, replicas, apps) = self.store.lease_share(now).await?;
        *self.share_mut() = Share {
            mine,
            fair: (apps + replicas - 1) / replicas,
            replicas,
        };
        for gone in self
            .store
            .interrupt_orphaned_syncs(now - REPLICA_TIMEOUT_MS, now)
            .await?
        {
            interrupted(&self.store, &gone).await?;
            self.queue.enqueue(&gone.application);
        }
        for app in self.store.unleased_applications(now).await? {
            self.queue.enqueue(&app);
        }
        Ok(())
    }

    /// Whether this replica reconciles `app` now: it holds the lease, or takes a free one while
    /// it holds less than its fair share (applications / live replicas, rounded up).
    async fn lease(&self, app: &str) -> Result<bool, StoreError> {
        let now = clock::now();
        if self.store.holds_lease(app, now).await? {
            return self.store.try_lease(app, now).await;
        }
        let share = *self.share_mut();
        if share.mine >= share.fair {
            return Ok(false);
        }
        let taken = self.store.try_lease(app, now).await?;
        if taken {
            self.share_mut().mine += 1;
        }
        Ok(taken)
    }

    /// Reconciles one application and schedules its next run.
    async fn run_one(&self, name: &str) {
        let source = match self.store.app_source(name).await {
            Ok(Some(source)) => source,
            Ok(None) => {
                self.queue.forget(name);
                return;
            }
            Err(e) => {
                tracing::error!(app = %name, error = %e, "cannot read the application");
                self.queue.enqueue_after(name, FIRST_BACKOFF);
                return;
            }
        };
        let Some(cluster) = self.clusters.get(&source.cluster) else {
            self.queue.enqueue_after(name, jittered(self.interval));
            return;
        };
        match self.lease(name).await {
            Ok(true) => {}
            // Another replica reconciles it; if that replica stops, the heartbeat finds the
            // lease free and queues the application again.
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(app = %name, error = %e, "cannot take the application's lease");
                self.queue.enqueue_after(name, FIRST_BACKOFF);
                return;
            }
        }
        let _guard = self.locks.lock(name).await;
        let started = std::time::Instant::now();
        let result = reconcile::reconcile_app(&self.store, cluster, &source).await;
        self.metrics.observe_reconcile(
            name,
            &source.project,
            started.elapsed(),
            result.as_ref().err().map(ReconcileError::kind),
        );
        match result {
            Ok(_) | Err(ReconcileError::NotRendered(_)) => {
                self.failures_mut().remove(name);
                self.queue.enqueue_after(name, jittered(self.interval));
                self.rebalance(name).await;
            }
            Err(ReconcileError::Store(StoreError::SyncRunning { .. })) => {
                self.queue.enqueue_after(name, BUSY_RETRY);
            }
            Err(e) => {
                let failures = {
                    let mut f = self.failures_mut();
                    let n = f.entry(name.to_owned()).or_insert(0);
                    *n += 1;
                    *n
                };
                let wait = backoff(failures);
                tracing::warn!(app = %name, error = %e, failures, retry_in_s = wait.as_secs(), "reconcile failed");
                let status = AppStatus {
                    sync_status: "Unknown".into(),
                    health: "Unknown".into(),
                    health_message: retry_message(&e.to_string(), wait, failures),
                    target_sha: None,
                    deployed_sha: None,
                    resources: Value::Array(Vec::new()),
                    compared_at: clock::now(),
                };
                if let Err(e) = self.store.save_status(name, &status).await {
                    tracing::error!(app = %name, error = %e, "cannot record status");
                }
                self.queue.enqueue_after(name, wait);
            }
        }
    }

    /// After a reconcile: a replica holding more than its fair share gives this application's
    /// lease up, so replicas that joined later share the work.
    async fn rebalance(&self, app: &str) {
        let share = *self.share_mut();
        if share.replicas > 1 && share.mine > share.fair {
            match self.store.release_lease(app).await {
                Ok(()) => self.share_mut().mine -= 1,
                Err(e) => tracing::warn!(app, error = %e, "cannot release a lease"),
            }
        }
    }

    fn share_mut(&self) -> std::sync::MutexGuard<'_, Share> {
        self.share.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn failures_mut(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// "retrying in 40 s (attempt 4): <error>", as the application page shows it.
pub fn retry_message(error: &str, wait: Duration, failures: u32) -> String {
    format!(
        "retrying in {} s (attempt {}): {error}",
        wait.as_secs(),
        failures + 1
    )
}

/// Records a sync closed because its replica stopped, on the application's timeline.
pub async fn interrupted(
    store: &Store,
    gone: &crate::store::Interrupted,
) -> Result<(), StoreError> {
    let message = format!(
        "sync #{} interrupted: the Tidemark replica running it stopped; the application will be compared again",
        gone.sync
    );
    store
        .add_timeline(
            &gone.application,
            "sync_interrupted",
            &message,
            &serde_json::json!({"sync": gone.sync, "replica": gone.owner}),
            clock::now(),
        )
        .await?;
    tracing::warn!(app = %gone.application, sync = gone.sync, "sync interrupted: its replica stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_five_seconds_to_five_minutes() {
        let waits: Vec<u64> = (1..=8).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, vec![5, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(backoff(1000), MAX_BACKOFF);
    }

    #[tokio::test(start_paused = true)]
    async fn an_application_is_queued_once_and_runs_again_after_a_trigger_during_its_run() {
        let q = WorkQueue::default();
        q.enqueue("a");
        q.enqueue("a");
        q.enqueue("b");
        assert_eq!(q.depth(), (2, 0, 0));
        assert_eq!(q.next().await, "a");
        q.enqueue("a"); // while running
        assert_eq!(q.next().await, "b");
        assert_eq!(q.depth(), (0, 0, 2));
        q.done("a");
        assert_eq!(q.next().await, "a");
    }

    #[tokio::test(start_paused = true)]
    async fn delayed_runs_keep_the_earliest_time_and_a_trigger_runs_now() {
        let q = WorkQueue::default();
        q.enqueue_after("slow", Duration::from_secs(60));
        q.enqueue_after("slow", Duration::from_secs(600)); // later: ignored
        q.enqueue_after("fast", Duration::from_secs(5));
        let started = Instant::now();
        assert_eq!(q.next().await, "fast");
        assert_eq!(started.elapsed().as_secs(), 5);
        q.enqueue("slow"); // a trigger moves it forward
        assert_eq!(q.next().await, "slow");
        assert_eq!(started.elapsed().as_secs(), 5);
        assert_eq!(q.depth(), (0, 0, 2));
    }

    #[test]
    fn the_retry_message_names_the_wait_and_the_attempt() {
        assert_eq!(
            retry_message("cluster unreachable", backoff(4), 4),
            "retrying in 40 s (attempt 5): cluster unreachable"
        );
    }
}
