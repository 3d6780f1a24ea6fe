//! Keeps this node on the cluster's desired state: woken by `NOTIFY` on a connection of its
//! own, and every second regardless (a missed notification heals within a second), it reads
//! the state when its generation moved and hands it to the plugin manager to apply. A node that
//! fails to apply part of it retries with backoff.

use std::time::{Duration, Instant};

use actix::{
    Actor, ActorContext as _, ActorFutureExt as _, AsyncContext, Context, Handler, Message,
    Recipient, WrapFuture,
};
use futures::StreamExt as _;

use super::desired_state::{DesiredState, DesiredStateStore, CHANGES_CHANNEL};
use crate::Error;

/// How often the follower looks at the generation without being woken.
const RECONCILE_INTERVAL: Duration = Duration::from_secs(1);
/// The first retry after a failed apply, doubled per failure up to the longest.
const FIRST_RETRY: Duration = Duration::from_millis(200);
const LONGEST_RETRY: Duration = Duration::from_secs(30);
/// How long the listening connection waits before it connects again after losing the database.
const RELISTEN_DELAY: Duration = Duration::from_secs(1);

/// Applies the cluster's desired state on this node (handled by the plugin manager): loads
/// what is missing, reloads what runs another source or other overrides, unloads what is no
/// longer recorded. Answers the plugins that could not be brought to the desired state.
#[derive(Message)]
#[rtype(result = "Vec<(String, Error)>")]
pub struct ApplyDesiredState {
    pub state: DesiredState,
}

/// Stops following the cluster (this node shuts down).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopFollowing;

/// Looks at the desired state now.
#[derive(Message)]
#[rtype(result = "()")]
struct Reconcile;

/// The follower actor.
pub struct ClusterFollower {
    store: DesiredStateStore,
    manager: Recipient<ApplyDesiredState>,
    /// The generation last applied without failures.
    applied: Option<i64>,
    running: bool,
    /// A wake-up came while a reconcile ran: run again after it.
    again: bool,
    failures: u32,
    not_before: Option<Instant>,
}

impl ClusterFollower {
    /// A follower that starts from `applied`, the generation the node applied at start.
    pub fn new(
        store: DesiredStateStore,
        manager: Recipient<ApplyDesiredState>,
        applied: Option<i64>,
    ) -> Self {
        ClusterFollower {
            store,
            manager,
            applied,
            running: false,
            again: false,
            failures: 0,
            not_before: None,
        }
    }

    fn reconcile(&mut self, context: &mut Context<Self>) {
        if self.running {
            self.again = true;
            return;
        }
        if self
            .not_before
            .is_some_and(|not_before| Instant::now() < not_before)
        {
            return;
        }
        self.running = true;
        let store = self.store.clone();
        let manager = self.manager.clone();
        let applied = self.applied;
        let failing = self.failures > 0;
        let work = async move {
            let generation = store.generation().await?;
            if Some(generation) == applied && !failing {
                return Ok(None);
            }
            let state = store.read().await?;
            let generation = state.generation;
            let failed = manager
                .send(ApplyDesiredState { state })
                .await
                .unwrap_or_else(|error| vec![(String::new(), Error::from(error))]);
            Ok::<_, crate::state_store::StoreError>(Some((generation, failed)))
        };
        context.spawn(work.into_actor(self).map(|outcome, follower, context| {
            follower.running = false;
            match outcome {
                Ok(None) => {}
                Ok(Some((generation, failed))) if failed.is_empty() => {
                    if follower.failures > 0 {
                        tracing::info!(generation, "this node caught up with the cluster");
                    }
                    follower.applied = Some(generation);
                    follower.failures = 0;
                    follower.not_before = None;
                }
                Ok(Some((generation, failed))) => {
                    for (plugin, error) in &failed {
                        tracing::warn!(%plugin, %error, generation, "this node could not apply the cluster's plugin; retrying");
                    }
                    follower.back_off();
                }
                Err(error) => {
                    tracing::warn!(%error, "the cluster's state could not be read; retrying");
                    follower.back_off();
                }
            }
            if std::mem::take(&mut follower.again) {
                follower.reconcile(context);
            }
        }));
    }

    fn back_off(&mut self) {
        self.failures = self.failures.saturating_add(1);
        let delay = FIRST_RETRY
            .saturating_mul(1 << self.failures.min(16))
            .min(LONGEST_RETRY);
        self.not_before = Some(Instant::now() + delay);
    }
}

impl Actor for ClusterFollower {
    type Context = Context<Self>;

    fn started(&mut self, context: &mut Self::Context) {
        context.run_interval(RECONCILE_INTERVAL, |follower, context| {
            follower.reconcile(context);
        });
        let listening = listen(
            self.store.backend().own_config().clone(),
            self.store.cluster().to_owned(),
            context.address().recipient(),
        );
        context.spawn(listening.into_actor(self));
    }
}

impl Handler<StopFollowing> for ClusterFollower {
    type Result = ();

    fn handle(&mut self, _: StopFollowing, context: &mut Self::Context) {
        context.stop();
    }
}

impl Handler<Reconcile> for ClusterFollower {
    type Result = ();

    fn handle(&mut self, _: Reconcile, context: &mut Self::Context) {
        // A notification is news: it skips the backoff of a retry.
        self.not_before = None;
        self.reconcile(context);
    }
}

/// Waits for the cluster's notifications on a connection of its own, for as long as the
/// follower lives, connecting again after losing the database.
async fn listen(config: tokio_postgres::Config, cluster: String, wake: Recipient<Reconcile>) {
    loop {
        match config.connect(tokio_postgres::NoTls).await {
            Ok((client, mut connection)) => {
                let (sender, mut notifications) = futures::channel::mpsc::unbounded();
                let stream =
                    futures::stream::poll_fn(move |context| connection.poll_message(context));
                let driving = stream.for_each(move |message| {
                    if let Ok(tokio_postgres::AsyncMessage::Notification(notification)) = message {
                        let _ = sender.unbounded_send(notification.payload().to_owned());
                    }
                    futures::future::ready(())
                });
                let listening = async {
                    if let Err(error) = client
                        .batch_execute(&format!("LISTEN {CHANGES_CHANNEL}"))
                        .await
                    {
                        tracing::warn!(%error, "cannot listen for the cluster's changes");
                        return;
                    }
                    // Changes made while not listening are found now, not at the next tick.
                    wake.do_send(Reconcile);
                    while let Some(payload) = notifications.next().await {
                        if payload == cluster {
                            wake.do_send(Reconcile);
                        }
                    }
                };
                futures::pin_mut!(driving);
                futures::pin_mut!(listening);
                futures::future::select(driving, listening).await;
            }
            Err(error) => {
                tracing::debug!(%error, "cannot connect to listen for the cluster's changes");
            }
        }
        tokio::time::sleep(RELISTEN_DELAY).await;
    }
}
