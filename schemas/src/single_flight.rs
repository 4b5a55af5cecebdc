//! Things made once per key however many ask at once: a topic created, a
//! schema registered.
//!
//! Without it, the first requests of a new event type each made their own:
//! a bridge started under load (256 connections at once) created an admin
//! client per request to create one topic (librdkafka threads, broker
//! connections and per-broker latency histograms each: 21 MB of those at
//! its peak, BENCHMARKS.md) and registered the same schema as many times.
//!
//! The callers that ask for a key while it is being made wait for that one
//! attempt and share its outcome, failure included: under an outage each
//! caller waits for one attempt, never for a queue of them. A success is
//! kept; a failure is not, so the next caller tries again.

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use std::borrow::Borrow;
use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::Mutex;

type Attempt<V, E> = Shared<BoxFuture<'static, Result<V, E>>>;

enum Slot<V, E> {
    Made(V),
    Making(Attempt<V, E>),
}

/// Values made once per key (see the module's doc).
pub struct SingleFlight<K, V, E> {
    slots: Mutex<HashMap<K, Slot<V, E>>>,
}

impl<K, V, E> Default for SingleFlight<K, V, E> {
    fn default() -> Self {
        Self { slots: Mutex::default() }
    }
}

impl<K, V, E> std::fmt::Debug for SingleFlight<K, V, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let made = slots.values().filter(|slot| matches!(slot, Slot::Made(_))).count();
        f.debug_struct("SingleFlight").field("made", &made).field("making", &(slots.len() - made)).finish()
    }
}

impl<K, V, E> SingleFlight<K, V, E>
where
    K: Eq + Hash,
    V: Clone + Send + Sync + 'static,
    E: Clone + Send + Sync + 'static,
{
    /// The value made for `key`, if it has been.
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        match self.slots.lock().unwrap_or_else(|e| e.into_inner()).get(key) {
            Some(Slot::Made(value)) => Some(value.clone()),
            _ => None,
        }
    }

    /// The value for `key`: the one made before, or the outcome of the
    /// attempt under way, or of a new attempt `make()` if there is none.
    /// The attempt goes on if the caller that started it stops waiting;
    /// the next caller waits for it.
    pub async fn get_or_make<Q, F, Fut>(&self, key: &Q, make: F) -> Result<V, E>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ToOwned<Owned = K> + ?Sized,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        let attempt = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            match slots.get(key) {
                Some(Slot::Made(value)) => return Ok(value.clone()),
                Some(Slot::Making(attempt)) => attempt.clone(),
                None => {
                    let attempt = make().boxed().shared();
                    slots.insert(key.to_owned(), Slot::Making(attempt.clone()));
                    attempt
                }
            }
        };
        let outcome = attempt.clone().await;
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        // Whoever of the attempt's waiters gets here first settles the slot;
        // the others find it settled (or already holding a newer attempt).
        if let Some(Slot::Making(current)) = slots.get(key)
            && current.ptr_eq(&attempt)
        {
            match &outcome {
                Ok(value) => {
                    slots.insert(key.to_owned(), Slot::Made(value.clone()));
                }
                Err(_) => {
                    slots.remove(key);
                }
            }
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// An attempt that counts itself, takes a while, and succeeds or not.
    fn attempt(made: &Arc<AtomicUsize>, succeed: bool) -> impl Future<Output = Result<usize, String>> + Send + 'static {
        let made = made.clone();
        async move {
            let n = made.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
            if succeed { Ok(n) } else { Err(format!("attempt {n} failed")) }
        }
    }

    type Flight = SingleFlight<String, usize, String>;

    /// `callers` tasks asking for "topic" at once, with attempts that
    /// succeed or not; what each got.
    async fn at_once(
        flight: &Arc<Flight>,
        made: &Arc<AtomicUsize>,
        callers: usize,
        succeed: bool,
    ) -> Vec<Result<usize, String>> {
        let callers: Vec<_> = (0..callers)
            .map(|_| {
                let (flight, made) = (flight.clone(), made.clone());
                tokio::spawn(async move { flight.get_or_make("topic", || attempt(&made, succeed)).await })
            })
            .collect();
        futures::future::join_all(callers).await.into_iter().map(|caller| caller.expect("caller")).collect()
    }

    #[tokio::test]
    async fn callers_at_once_share_one_attempt_and_its_value_is_kept() {
        let (flight, made) = (Arc::new(Flight::default()), Arc::new(AtomicUsize::new(0)));
        assert_eq!(at_once(&flight, &made, 100, true).await, vec![Ok(1); 100]);
        assert_eq!(made.load(Ordering::SeqCst), 1, "one attempt for 100 callers");
        assert_eq!(flight.get("topic"), Some(1));
        assert_eq!(flight.get_or_make("topic", || attempt(&made, true)).await, Ok(1));
        assert_eq!(made.load(Ordering::SeqCst), 1, "the value made is kept");
        assert_eq!(flight.get_or_make("other", || attempt(&made, true)).await, Ok(2), "each key its own");
    }

    #[tokio::test]
    async fn a_failure_is_shared_by_its_waiters_and_not_kept() {
        let (flight, made) = (Arc::new(Flight::default()), Arc::new(AtomicUsize::new(0)));
        assert_eq!(at_once(&flight, &made, 20, false).await, vec![Err("attempt 1 failed".to_owned()); 20]);
        assert_eq!(made.load(Ordering::SeqCst), 1, "the waiters do not each try again");
        assert_eq!(flight.get("topic"), None);
        assert_eq!(flight.get_or_make("topic", || attempt(&made, true)).await, Ok(2), "the next caller tries again");
    }

    #[tokio::test]
    async fn an_attempt_goes_on_when_its_first_caller_stops_waiting() {
        let flight = Flight::default();
        let made = Arc::new(AtomicUsize::new(0));
        let gave_up =
            tokio::time::timeout(Duration::from_millis(10), flight.get_or_make("topic", || attempt(&made, true)));
        assert!(gave_up.await.is_err(), "the first caller stops waiting");
        assert_eq!(flight.get_or_make("topic", || attempt(&made, true)).await, Ok(1));
        assert_eq!(made.load(Ordering::SeqCst), 1, "the second caller waited for the first attempt");
    }
}
