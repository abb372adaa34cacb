//! A wake-up flag for tasks that live on one worker thread.
//!
//! Sessions and backend connections of a worker run on the same current-thread runtime and share
//! state through `Rc`. Waking one of them needs no lock and no atomic: a flag and a stored waker
//! are enough. A wake-up that arrives while nobody waits is remembered, so none is ever lost.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Single-thread notification: `notify` sets a flag and wakes the waiter, `notified` waits for it.
#[derive(Default)]
pub struct LocalNotify {
    flag: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl LocalNotify {
    /// Wake the task waiting in [`LocalNotify::notified`], or the next one to call it.
    pub fn notify(&self) {
        if self.flag.replace(true) {
            return;
        }
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Completes once [`LocalNotify::notify`] has been called since the last completion.
    pub fn notified(&self) -> Notified<'_> {
        Notified { n: self }
    }
}

/// Future returned by [`LocalNotify::notified`].
pub struct Notified<'a> {
    n: &'a LocalNotify,
}

impl Future for Notified<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.n.flag.replace(false) {
            return Poll::Ready(());
        }
        let mut slot = self.n.waker.borrow_mut();
        match slot.as_ref() {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn a_notify_before_the_wait_is_not_lost() {
        let n = LocalNotify::default();
        n.notify();
        tokio::time::timeout(std::time::Duration::from_millis(100), n.notified())
            .await
            .expect("the earlier notify must complete the wait");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_flag_is_consumed_by_one_wait() {
        let n = LocalNotify::default();
        n.notify();
        n.notify();
        n.notified().await;
        let second = tokio::time::timeout(std::time::Duration::from_millis(20), n.notified()).await;
        assert!(
            second.is_err(),
            "two notifies before one wait collapse into one"
        );
    }
}
