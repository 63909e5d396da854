//! The per-app request queue: bounded, FIFO, and aware of when each entry arrived.
//!
//! Pure data structure: time is passed in, nothing here sleeps, reads a clock or does I/O, so
//! the queue is tested with made-up instants. The master stores a waiter (a channel that will
//! receive a worker) per entry; entries whose waiter is gone are skipped by [`Queue::pop_live`].

use std::collections::VecDeque;

use tokio::time::{Duration, Instant};

/// One waiting request.
#[derive(Debug)]
pub struct Entry<T> {
    /// Unique per queue, so a request that gives up can take itself out.
    pub id: u64,
    pub enqueued: Instant,
    pub item: T,
}

#[derive(Debug)]
pub struct Queue<T> {
    entries: VecDeque<Entry<T>>,
    max: usize,
    next_id: u64,
}

impl<T> Queue<T> {
    pub fn new(max: usize) -> Self {
        Queue {
            entries: VecDeque::new(),
            max,
            next_id: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends `item`, or hands it back when `max` entries are waiting.
    pub fn push(&mut self, now: Instant, item: T) -> Result<u64, T> {
        if self.entries.len() >= self.max {
            return Err(item);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.entries.push_back(Entry {
            id,
            enqueued: now,
            item,
        });
        Ok(id)
    }

    /// Takes the oldest entry for which `live` holds, dropping dead ones on the way.
    pub fn pop_live(&mut self, mut live: impl FnMut(&T) -> bool) -> Option<Entry<T>> {
        while let Some(e) = self.entries.pop_front() {
            if live(&e.item) {
                return Some(e);
            }
        }
        None
    }

    /// Takes out the entry `id` if it is still queued.
    pub fn remove(&mut self, id: u64) -> Option<Entry<T>> {
        // Entries leave mostly from the front; search from there.
        let i = self.entries.iter().position(|e| e.id == id)?;
        self.entries.remove(i)
    }

    /// Drops every entry whose item is no longer wanted.
    pub fn retain(&mut self, live: impl FnMut(&T) -> bool) {
        let mut live = live;
        self.entries.retain(|e| live(&e.item));
    }

    /// Empties the queue.
    pub fn drain(&mut self) -> impl Iterator<Item = Entry<T>> + '_ {
        self.entries.drain(..)
    }

    /// How long the oldest entry has waited.
    pub fn oldest_wait(&self, now: Instant) -> Duration {
        self.entries.front().map_or(Duration::ZERO, |e| {
            now.saturating_duration_since(e.enqueued)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_bounded_and_skips_dead() {
        let t0 = Instant::now();
        let mut q = Queue::new(3);
        for (i, alive) in [(0, true), (1, false), (2, true)] {
            q.push(t0 + Duration::from_millis(i), (i, alive)).unwrap();
        }
        assert_eq!(q.push(t0, (9, true)), Err((9, true)));
        assert_eq!(
            q.oldest_wait(t0 + Duration::from_millis(10)),
            Duration::from_millis(10)
        );
        let first = q.pop_live(|&(_, alive)| alive).unwrap();
        assert_eq!(first.item.0, 0);
        let next = q.pop_live(|&(_, alive)| alive).unwrap();
        assert_eq!(
            (next.item.0, next.enqueued),
            (2, t0 + Duration::from_millis(2))
        );
        assert!(q.pop_live(|_| true).is_none());
        assert_eq!(q.oldest_wait(t0), Duration::ZERO);
    }

    #[test]
    fn remove_by_id_and_retain() {
        let t0 = Instant::now();
        let mut q = Queue::new(10);
        let ids: Vec<u64> = (0..5).map(|i| q.push(t0, i).unwrap()).collect();
        assert_eq!(q.remove(ids[2]).unwrap().item, 2);
        assert!(q.remove(ids[2]).is_none());
        q.retain(|&i| i % 2 == 0);
        assert_eq!(q.drain().map(|e| e.item).collect::<Vec<_>>(), [0, 4]);
        assert!(q.is_empty());
    }
}
