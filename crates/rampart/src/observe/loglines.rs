//! Log lines that anyone who reaches a port can cause (a refused TLS handshake, a failed
//! `AUTH`), kept to a bounded rate so that a flood of them cannot fill the disk or drown the
//! log: at most [`LINES_PER_SECOND`] lines of one kind in each second; the first line after
//! some were left out says how many. Every event is still counted in its metric.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lines of one kind written in one second, at most.
pub const LINES_PER_SECOND: u32 = 10;

/// The rate limit of one kind of line (a `static` per call site).
pub struct Lines {
    state: Mutex<State>,
}

struct State {
    /// When the current one-second window started (`None`: no line yet).
    window: Option<Instant>,
    /// Lines written in the current window.
    written: u32,
    /// Lines left out since the last one written.
    left_out: u64,
}

impl Lines {
    /// A limiter that has written nothing yet.
    #[must_use]
    pub const fn new() -> Lines {
        Lines {
            state: Mutex::new(State {
                window: None,
                written: 0,
                left_out: 0,
            }),
        }
    }

    /// Whether a line may be written now: `Some(n)`, `n` being the lines left out since the
    /// last one written (to be said in this one), or `None` (the line is left out and
    /// counted).
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> Option<u64> {
        let Ok(mut s) = self.state.lock() else {
            return Some(0);
        };
        if s.window
            .is_none_or(|w| now.saturating_duration_since(w) >= Duration::from_secs(1))
        {
            s.window = Some(now);
            s.written = 0;
        }
        if s.written < LINES_PER_SECOND {
            s.written += 1;
            Some(std::mem::take(&mut s.left_out))
        } else {
            s.left_out += 1;
            None
        }
    }
}

impl Default for Lines {
    fn default() -> Lines {
        Lines::new()
    }
}

/// ` (N more <what> since the last line)` when `left_out` is not 0, else nothing: the tail
/// of an admitted line.
#[must_use]
pub fn more(left_out: u64, what: &str) -> String {
    if left_out == 0 {
        String::new()
    } else {
        format!(" ({left_out} more {what} since the last line)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_cut_to_the_rate_and_the_next_line_says_how_many_were_left_out() {
        let lines = Lines::new();
        let t0 = Instant::now();
        let admitted = (0..100).filter(|_| lines.admit_at(t0).is_some()).count();
        assert_eq!(admitted, LINES_PER_SECOND as usize);
        let later = t0 + Duration::from_millis(999);
        assert_eq!(lines.admit_at(later), None);
        let next = t0 + Duration::from_secs(1);
        assert_eq!(lines.admit_at(next), Some(91));
        assert_eq!(lines.admit_at(next), Some(0));
        assert_eq!(more(0, "refusals"), "");
        assert_eq!(
            more(91, "refusals"),
            " (91 more refusals since the last line)"
        );
    }
}
