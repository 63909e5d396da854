//! An app's output (its zygote's and workers' stdout and stderr) turned into log events: a
//! Python traceback becomes one event at ERROR, not one event per line, and a line in the
//! shape of a logging record at ERROR or WARNING gets that level. Everything else is INFO.
//!
//! Pure: [`Grouper`] is fed lines and hands back events; the caller (the supervisor's output
//! forwarding, `zygote.rs`) reads the pipes, cuts lines at 8 KiB, flushes a held group when
//! no line came for a moment, and spends the app's log budget. [`Repeats`] remembers the last
//! traceback, so that an import failure printed again at each restart of the zygote is logged
//! in full once, then as one line until it changes.
//!
//! The rules, kept simple on purpose:
//! - A traceback starts at a line `Traceback (most recent call last):` and ends at the first
//!   line after it that is not indented: the exception line. A chained exception (a blank
//!   line, `During handling of the above exception, another exception occurred:` or `The above
//!   exception was the direct cause of the following exception:`, a blank line, `Traceback
//!   ...`) continues the same event.
//! - The line just before a traceback joins it when it heads it: one of the worker's own
//!   (`warren-worker: ... unhandled exception:`, any `warren-worker: ` line ending in `:`) or a
//!   WARN or ERROR line (Flask's `[time] ERROR in app: Exception on / [GET]`).
//! - A line is ERROR when one of its first five words is `ERROR`, `CRITICAL` or `FATAL`, and
//!   WARN for `WARNING` or `WARN`: in capitals, alone, in brackets or before a colon, as
//!   Python's logging formats write the level (`ERROR:root:...`, `[ERROR]`, `... ERROR in
//!   app:`). A traceback is ERROR.
//! - A traceback keeps at most [`MAX_GROUP_LINES`] lines and [`MAX_GROUP_BYTES`] bytes (its
//!   exception line always): the rest is counted, not kept.
//!
//! Concurrent workers share their zygote's pipes, so two tracebacks printed at the same moment
//! may interleave; the grouping is then best effort (every line is still logged).

use std::hash::{DefaultHasher, Hash, Hasher};

/// Most lines one traceback event holds (its exception line always comes in addition).
pub const MAX_GROUP_LINES: usize = 200;
/// Most bytes one traceback event holds (lines are cut at 8 KiB before they get here).
pub const MAX_GROUP_BYTES: usize = 64 * 1024;

/// The level an event is logged at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Info,
    Warn,
    Error,
}

/// One log event made of an app's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub level: Level,
    /// The line, or a traceback's lines joined by `\n`.
    pub text: String,
    /// Lines in `text` (what the event costs of the app's log budget).
    pub lines: usize,
    /// Bytes cut off the lines of this event (at 8 KiB per line).
    pub cut_bytes: usize,
    pub traceback: bool,
}

impl Event {
    fn line(text: &str, cut_bytes: usize) -> Event {
        Event {
            level: level(text),
            text: text.to_owned(),
            lines: 1,
            cut_bytes,
            traceback: false,
        }
    }
}

/// The level of one line of output (see the module's rules).
pub fn level(line: &str) -> Level {
    for word in line.split_whitespace().take(5) {
        let word = word.trim_start_matches('[');
        let word = word.split([']', ':']).next().unwrap_or("");
        match word {
            "ERROR" | "CRITICAL" | "FATAL" => return Level::Error,
            "WARNING" | "WARN" => return Level::Warn,
            _ => {}
        }
    }
    Level::Info
}

fn starts_traceback(line: &str) -> bool {
    line == "Traceback (most recent call last):"
}

/// A line held before a traceback: does it head one if one follows?
fn may_head(line: &str) -> bool {
    (line.starts_with("warren-worker: ") && line.ends_with(':')) || level(line) > Level::Info
}

fn chains(line: &str) -> bool {
    line == "During handling of the above exception, another exception occurred:"
        || line == "The above exception was the direct cause of the following exception:"
}

/// A traceback being collected.
#[derive(Debug, Default)]
struct Group {
    text: String,
    lines: usize,
    cut_bytes: usize,
    /// Lines left out (over the caps), and where in `text` they were.
    dropped: usize,
    dropped_at: usize,
}

impl Group {
    fn add(&mut self, line: &str, cut_bytes: usize, keep: bool) {
        let full = self.lines >= MAX_GROUP_LINES || self.text.len() + line.len() > MAX_GROUP_BYTES;
        if full && !keep {
            if self.dropped == 0 {
                self.dropped_at = self.text.len();
            }
            self.dropped += 1;
            self.cut_bytes += cut_bytes;
            return;
        }
        if self.lines > 0 {
            self.text.push('\n');
        }
        self.text.push_str(line);
        self.lines += 1;
        self.cut_bytes += cut_bytes;
    }

    fn finish(mut self) -> Event {
        if self.dropped > 0 {
            let note = format!("\n    ... ({} lines cut)", self.dropped);
            self.text.insert_str(self.dropped_at, &note);
            self.lines += 1;
        }
        Event {
            level: Level::Error,
            text: self.text,
            lines: self.lines,
            cut_bytes: self.cut_bytes,
            traceback: true,
        }
    }
}

#[derive(Debug, Default)]
enum State {
    #[default]
    Idle,
    /// A line that heads a traceback if the next line starts one.
    Header(String, usize),
    /// Inside a traceback, before its exception line.
    Traceback(Group),
    /// After a traceback's exception line: the lines seen so far of what would chain another
    /// one to it (a blank line, the chaining sentence, a blank line).
    After(Group, Vec<String>),
}

/// Turns lines of output into events. Lines are given without their newline.
#[derive(Debug, Default)]
pub struct Grouper {
    state: State,
}

impl Grouper {
    /// Takes one line (with the bytes cut off its end); the events it completes go to `out`.
    pub fn push(&mut self, line: &str, cut_bytes: usize, out: &mut Vec<Event>) {
        match std::mem::take(&mut self.state) {
            State::Idle => {
                if starts_traceback(line) {
                    let mut g = Group::default();
                    g.add(line, cut_bytes, true);
                    self.state = State::Traceback(g);
                } else if may_head(line) {
                    self.state = State::Header(line.to_owned(), cut_bytes);
                } else {
                    out.push(Event::line(line, cut_bytes));
                }
            }
            State::Header(head, head_cut) => {
                if starts_traceback(line) {
                    let mut g = Group::default();
                    g.add(&head, head_cut, true);
                    g.add(line, cut_bytes, true);
                    self.state = State::Traceback(g);
                } else {
                    out.push(Event::line(&head, head_cut));
                    self.push(line, cut_bytes, out);
                }
            }
            State::Traceback(mut g) => {
                if line.starts_with([' ', '\t']) {
                    g.add(line, cut_bytes, false);
                    self.state = State::Traceback(g);
                } else if line.is_empty() {
                    // Not a traceback's shape: what came so far is one, the rest is not.
                    out.push(g.finish());
                    self.push(line, cut_bytes, out);
                } else {
                    g.add(line, cut_bytes, true);
                    self.state = State::After(g, Vec::new());
                }
            }
            State::After(mut g, mut tail) => {
                let expected = match tail.len() {
                    0 | 2 => line.is_empty(),
                    1 => chains(line),
                    _ => starts_traceback(line),
                };
                if !expected {
                    out.push(g.finish());
                    for held in &tail {
                        self.push(held, 0, out);
                    }
                    self.push(line, cut_bytes, out);
                } else if tail.len() == 3 {
                    for held in &tail {
                        g.add(held, 0, true);
                    }
                    g.add(line, cut_bytes, true);
                    self.state = State::Traceback(g);
                } else {
                    tail.push(line.to_owned());
                    self.state = State::After(g, tail);
                }
            }
        }
    }

    /// Whether lines are held, waiting for what follows: the caller flushes them when none
    /// comes soon.
    pub fn holding(&self) -> bool {
        !matches!(self.state, State::Idle)
    }

    /// Ends what is held (no line came for a while, or the output ended).
    pub fn flush(&mut self, out: &mut Vec<Event>) {
        match std::mem::take(&mut self.state) {
            State::Idle => {}
            State::Header(head, cut) => out.push(Event::line(&head, cut)),
            State::Traceback(g) => out.push(g.finish()),
            State::After(g, tail) => {
                out.push(g.finish());
                for held in &tail {
                    self.push(held, 0, out);
                }
                self.flush(out);
            }
        }
    }
}

/// The app's last traceback, to tell a repeat (an import failure printed again each time the
/// zygote restarts) from a new one. Only a hash is kept.
#[derive(Debug, Default)]
pub struct Repeats {
    last: Option<u64>,
    seen: u64,
}

impl Repeats {
    /// `None`: log this traceback in full (the first of its kind); `Some(n)`: it is the same
    /// as the previous one, seen `n` times in a row now.
    pub fn check(&mut self, text: &str) -> Option<u64> {
        let mut h = DefaultHasher::new();
        text.hash(&mut h);
        let h = h.finish();
        if self.last == Some(h) {
            self.seen += 1;
            Some(self.seen)
        } else {
            self.last = Some(h);
            self.seen = 1;
            None
        }
    }
}

#[cfg(test)]
mod tests;
