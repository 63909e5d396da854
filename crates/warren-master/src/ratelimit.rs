//! A token bucket for log lines an app can cause at will (its own output, its workers'
//! crashes): a hostile or broken app must not fill the disk through warren's log.
//!
//! Pure: the caller passes the time, so the bucket is tested with made-up instants.

use tokio::time::Instant;

#[derive(Debug)]
pub struct TokenBucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    /// Events refused since the last one let through.
    refused: u64,
}

impl TokenBucket {
    pub fn new(per_second: f64, burst: f64, now: Instant) -> Self {
        TokenBucket {
            per_second,
            burst,
            tokens: burst,
            last: now,
            refused: 0,
        }
    }

    /// Takes one token: `Some(n)` if the event may go out, `n` being how many were refused
    /// since the previous one that went out (worth a line of its own); `None` if not.
    pub fn take(&mut self, now: Instant) -> Option<u64> {
        self.take_n(1, now)
    }

    /// Takes `n` tokens at once, for an event of `n` lines (a traceback): it goes out whole
    /// or not at all. An event larger than the burst costs the burst.
    pub fn take_n(&mut self, n: usize, now: Instant) -> Option<u64> {
        let n = (n as f64).clamp(1.0, self.burst);
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.per_second).min(self.burst);
        if self.tokens >= n {
            self.tokens -= n;
            Some(std::mem::take(&mut self.refused))
        } else {
            self.refused += 1;
            None
        }
    }
}

/// Log lines per second an app may cause, and the burst it may have saved up.
pub const APP_LOG_PER_SECOND: f64 = 200.0;
pub const APP_LOG_BURST: f64 = 2000.0;

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Duration;

    #[test]
    fn burst_then_rate_then_count_of_refused() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 3.0, t0);
        let check = |b: &mut TokenBucket, at_ms: u64, want: Option<u64>| {
            assert_eq!(
                b.take(t0 + Duration::from_millis(at_ms)),
                want,
                "at {at_ms} ms"
            );
        };
        check(&mut b, 0, Some(0));
        check(&mut b, 0, Some(0));
        check(&mut b, 0, Some(0));
        check(&mut b, 0, None);
        check(&mut b, 50, None);
        // 100 ms at 10/s earns one token; the two refused events are reported with it.
        check(&mut b, 100, Some(2));
        check(&mut b, 100, None);
        // A long pause refills only up to the burst.
        check(&mut b, 10_000, Some(1));
        check(&mut b, 10_000, Some(0));
        check(&mut b, 10_000, Some(0));
        check(&mut b, 10_000, None);
    }

    #[test]
    fn an_event_of_many_lines_costs_them_all() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 5.0, t0);
        assert_eq!(b.take_n(3, t0), Some(0));
        assert_eq!(b.take_n(3, t0), None);
        assert_eq!(b.take_n(2, t0), Some(1));
        // 500 ms earn five tokens: a 50-line event costs the whole burst, no more.
        let later = t0 + Duration::from_millis(500);
        assert_eq!(b.take_n(50, later), Some(0));
        assert_eq!(b.take(later), None);
    }
}
