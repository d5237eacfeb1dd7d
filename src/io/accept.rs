//! Backing off after a failed `accept`: with EMFILE (no file descriptor left) the pending
//! connection stays queued and every retry fails at once, so an immediate retry loop would
//! spin a core and flood the log. Used by the TCP/TLS listeners and the admin listener.

use std::io;
use std::time::Duration;

/// First pause after a failed accept.
const FIRST_PAUSE: Duration = Duration::from_millis(10);
/// Longest pause.
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// What to do after an accept error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcceptStep {
    /// An error about one connection only (it was aborted or reset): accept the next now.
    Retry,
    /// A resource error: wait, and log it when `log` (the first error of a burst).
    Pause {
        /// How long to wait before accepting again.
        wait: Duration,
        /// Whether this error starts a burst and should be logged.
        log: bool,
    },
}

/// Exponential backoff over a burst of accept errors; a successful accept ends the burst.
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    errors: u64,
    pause: Duration,
}

impl AcceptBackoff {
    /// The step after `kind` of error.
    pub fn on_error(&mut self, kind: io::ErrorKind) -> AcceptStep {
        if matches!(
            kind,
            io::ErrorKind::ConnectionAborted
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::Interrupted
                | io::ErrorKind::WouldBlock
        ) {
            return AcceptStep::Retry;
        }
        self.errors += 1;
        self.pause = if self.errors == 1 {
            FIRST_PAUSE
        } else {
            (self.pause * 2).min(MAX_PAUSE)
        };
        AcceptStep::Pause {
            wait: self.pause,
            log: self.errors == 1,
        }
    }

    /// A connection was accepted: returns how many errors the burst it ends had, if any.
    pub fn on_success(&mut self) -> Option<u64> {
        let errors = std::mem::take(&mut self.errors);
        self.pause = Duration::ZERO;
        (errors > 0).then_some(errors)
    }

    /// Logs and waits as [`AcceptBackoff::on_error`] says; `listener` names it in the log.
    pub async fn after_error(&mut self, error: &io::Error, listener: &str) {
        if let AcceptStep::Pause { wait, log } = self.on_error(error.kind()) {
            if log {
                tracing::warn!(target: "turnstone::io", %error, listener,
                    "accept failed; backing off (up to 1 s) until it succeeds again");
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Records a successful accept, logging the end of a burst of errors.
    pub fn after_success(&mut self, listener: &str) {
        if let Some(errors) = self.on_success() {
            tracing::warn!(target: "turnstone::io", listener, errors, "accept works again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_emfile_errors_backs_off_exponentially_up_to_a_second_and_logs_once() {
        let mut backoff = AcceptBackoff::default();
        let emfile = io::Error::from_raw_os_error(libc::EMFILE).kind();
        let mut waits = Vec::new();
        let mut logged = 0;
        for _ in 0..12 {
            let AcceptStep::Pause { wait, log } = backoff.on_error(emfile) else {
                panic!("EMFILE must pause");
            };
            waits.push(wait);
            logged += usize::from(log);
        }
        assert_eq!(logged, 1, "one log line per burst");
        assert_eq!(waits[0], FIRST_PAUSE);
        assert_eq!(waits[1], FIRST_PAUSE * 2);
        assert!(waits.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(*waits.last().unwrap(), MAX_PAUSE);
        let total: Duration = waits.iter().sum();
        assert!(
            total > Duration::from_secs(5),
            "12 errors spin for {total:?}"
        );

        assert_eq!(backoff.on_success(), Some(12));
        assert_eq!(backoff.on_success(), None);
        // A new burst starts over, and is logged again.
        assert_eq!(
            backoff.on_error(emfile),
            AcceptStep::Pause {
                wait: FIRST_PAUSE,
                log: true
            }
        );
    }

    #[test]
    fn an_aborted_connection_is_skipped_without_a_pause() {
        let mut backoff = AcceptBackoff::default();
        assert_eq!(
            backoff.on_error(io::ErrorKind::ConnectionAborted),
            AcceptStep::Retry
        );
        assert_eq!(backoff.on_success(), None);
    }
}
