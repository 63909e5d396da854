//! Each app's sandbox uid: assigned once, recorded in the state directory, kept for good.
//!
//! An app's uid owns its files on disk (its `sandbox.writable` directories), so it must not
//! move when other apps come and go, and must never be given to another app while files it
//! owned may exist. The rule is the simplest sound one: a uid is never reused. The table of
//! `NAME UID` lines in `<server.state_dir>/identities` holds every app that ever had a uid,
//! removed ones included (their uid stays reserved, and an app of the same name that comes back
//! gets its old one). A new app gets the lowest uid of `[sandbox_uid_base, base + 65536)` that
//! no entry holds. A changed base moves no existing app; only new apps are drawn from the new
//! range.
//!
//! [`assign`] is the whole policy and is pure. [`read`] and [`commit`] are the file shell:
//! `commit` takes an exclusive `flock` on `identities.lock` (so two warrens on one state
//! directory cannot hand out one uid twice), re-reads the table, assigns, and replaces the
//! file atomically (temporary file, fsync, rename, fsync of the directory). `warren check`
//! only reads.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The table's file name in the state directory.
pub const FILE: &str = "identities";
/// The lock file next to it (the table itself is replaced on every write, so it cannot hold
/// the lock).
pub const LOCK: &str = "identities.lock";
/// How many uids a base opens (`server.sandbox_uid_base` must leave room for them).
pub const RANGE: u32 = 65_536;

/// The recorded identities: app name to uid, removed apps included.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table(BTreeMap<String, u32>);

impl Table {
    pub fn get(&self, name: &str) -> Option<u32> {
        self.0.get(name).copied()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Parses the file's text: `NAME UID` lines, `#` comments, blank lines. Names and uids are
    /// unique.
    pub fn parse(text: &str) -> Result<Table, (usize, String)> {
        let mut names = BTreeMap::new();
        let mut owners: BTreeMap<u32, String> = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split_whitespace();
            let (Some(name), Some(uid), None) = (fields.next(), fields.next(), fields.next())
            else {
                return Err((n, "expected `NAME UID`".into()));
            };
            let uid: u32 = uid
                .parse()
                .map_err(|_| (n, format!("`{uid}` is not a uid")))?;
            if let Some(other) = owners.insert(uid, name.to_owned()) {
                return Err((n, format!("uid {uid} is already `{other}`'s")));
            }
            if names.insert(name.to_owned(), uid).is_some() {
                return Err((n, format!("`{name}` appears twice")));
            }
        }
        Ok(Table(names))
    }

    /// The file's text, in uid order (the order they were handed out within a base).
    pub fn render(&self) -> String {
        let mut out = String::from(
            "# warren's app identities: NAME UID, one per line, removed apps included.\n\
             # A uid is never given to another app; delete a line only once nothing on disk\n\
             # belongs to that uid any more. Written by `warren serve`.\n",
        );
        let mut rows: Vec<(&String, &u32)> = self.0.iter().collect();
        rows.sort_by_key(|(_, uid)| **uid);
        for (name, uid) in rows {
            out.push_str(&format!("{name} {uid}\n"));
        }
        out
    }
}

/// What [`assign`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The table to record: the old one plus the new entries.
    pub table: Table,
    /// The uid of each app asked about.
    pub uids: BTreeMap<String, u32>,
    /// The apps that were given a uid now, with it, in the order asked.
    pub new: Vec<(String, u32)>,
}

/// No uid left in the range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no free uid left in [{base}, {base} + {RANGE}) for app `{app}`")]
pub struct RangeFull {
    pub base: u32,
    pub app: String,
}

/// The uid of each of `names` given the recorded `table` and `base`: a recorded app keeps its
/// uid (whatever the base is now); a new one gets the lowest uid from `base` up that no entry
/// of the table holds, in the order of `names`.
pub fn assign(table: &Table, names: &[&str], base: u32) -> Result<Assignment, RangeFull> {
    let mut next = table.clone();
    let mut taken: std::collections::BTreeSet<u32> = table.0.values().copied().collect();
    let mut uids = BTreeMap::new();
    let mut new = Vec::new();
    let mut candidate = base;
    for &name in names {
        let uid = match table.get(name) {
            Some(uid) => uid,
            None => {
                while taken.contains(&candidate) {
                    candidate += 1;
                }
                if candidate >= base.saturating_add(RANGE) {
                    return Err(RangeFull {
                        base,
                        app: name.to_owned(),
                    });
                }
                let uid = candidate;
                taken.insert(uid);
                next.0.insert(name.to_owned(), uid);
                new.push((name.to_owned(), uid));
                uid
            }
        };
        uids.insert(name.to_owned(), uid);
    }
    Ok(Assignment {
        table: next,
        uids,
        new,
    })
}

/// Reading or writing the identities file failed.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: line {line}: {reason}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{}: {source}", path.display())]
    Full { path: PathBuf, source: RangeFull },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The table recorded in `state_dir` (empty when there is none yet). Takes no lock: the file
/// is only ever replaced whole, by a rename.
pub fn read(state_dir: &Path) -> Result<Table, IdentityError> {
    let path = state_dir.join(FILE);
    match fs::read_to_string(&path) {
        Ok(text) => Table::parse(&text).map_err(|(line, reason)| IdentityError::Parse {
            path: path.clone(),
            line,
            reason,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Table::default()),
        Err(e) => Err(io(&path)(e)),
    }
}

/// Creates `state_dir` (mode 0700) if it is missing, then under its lock re-reads the table,
/// assigns uids to `names` and records the new ones.
pub fn commit(state_dir: &Path, names: &[&str], base: u32) -> Result<Assignment, IdentityError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
        .map_err(io(state_dir))?;
    let lock_path = state_dir.join(LOCK);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(io(&lock_path))?;
    // Held until `lock` is dropped at the end of this function.
    lock.lock().map_err(io(&lock_path))?;
    let table = read(state_dir)?;
    let path = state_dir.join(FILE);
    let assignment = assign(&table, names, base).map_err(|source| IdentityError::Full {
        path: path.clone(),
        source,
    })?;
    if assignment.table != table {
        write_atomically(state_dir, &path, assignment.table.render().as_bytes())?;
    }
    drop(lock);
    Ok(assignment)
}

/// Temporary file, fsync, rename over `path`, fsync of the directory: after a crash the file
/// is either the old table or the new one, never a part.
fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), IdentityError> {
    let tmp = dir.join(format!("{FILE}.tmp"));
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    fs::rename(&tmp, path).map_err(io(path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(rows: &[(&str, u32)]) -> Table {
        Table(rows.iter().map(|(n, u)| ((*n).to_owned(), *u)).collect())
    }

    /// Assigns `names` against `recorded` at `base`: each app's uid, and the new entries.
    fn check(
        recorded: &[(&str, u32)],
        names: &[&str],
        base: u32,
        uids: &[(&str, u32)],
        new: &[(&str, u32)],
    ) {
        let a = assign(&table(recorded), names, base).unwrap();
        let got: Vec<(&str, u32)> = names.iter().map(|n| (*n, a.uids[*n])).collect();
        let mut want: Vec<(&str, u32)> = uids.to_vec();
        want.sort_by_key(|(n, _)| names.iter().position(|m| m == n));
        assert_eq!(got, want, "uids of {names:?} with {recorded:?} at {base}");
        let got_new: Vec<(&str, u32)> = a.new.iter().map(|(n, u)| (n.as_str(), *u)).collect();
        assert_eq!(got_new, new, "new entries");
        // The table keeps every old entry and gains exactly the new ones.
        let mut expected = table(recorded);
        for (n, u) in new {
            expected.0.insert((*n).to_owned(), *u);
        }
        assert_eq!(a.table, expected);
    }

    const B: u32 = 200_000;

    #[test]
    fn assignment() {
        // A first start: apps in the order given (name order, from the config).
        check(
            &[],
            &["a", "b"],
            B,
            &[("a", B), ("b", B + 1)],
            &[("a", B), ("b", B + 1)],
        );
        // Recorded apps keep theirs; nothing new.
        check(&[("todo", B)], &["todo"], B, &[("todo", B)], &[]);
        // An app that sorts first arrives: it gets a fresh uid, `todo` keeps its own.
        check(
            &[("todo", B)],
            &["aaa", "todo"],
            B,
            &[("aaa", B + 1), ("todo", B)],
            &[("aaa", B + 1)],
        );
        // A removed app stays reserved: the next new app does not get its uid.
        check(
            &[("gone", B), ("todo", B + 1)],
            &["new", "todo"],
            B,
            &[("new", B + 2), ("todo", B + 1)],
            &[("new", B + 2)],
        );
        // An app that comes back gets its old uid.
        check(
            &[("gone", B), ("todo", B + 1)],
            &["gone"],
            B,
            &[("gone", B)],
            &[],
        );
        // A changed base moves nobody; new apps come from the new range.
        check(
            &[("todo", B)],
            &["other", "todo"],
            300_000,
            &[("other", 300_000), ("todo", B)],
            &[("other", 300_000)],
        );
        // ... also when the old entries lie inside the new range.
        check(
            &[("todo", B)],
            &["other", "todo"],
            B - 1,
            &[("other", B - 1), ("todo", B)],
            &[("other", B - 1)],
        );
        // Gaps (never handed out, e.g. from an old base) are used; held uids are skipped.
        check(
            &[("x", B + 1), ("y", B + 3)],
            &["p", "q", "r"],
            B,
            &[("p", B), ("q", B + 2), ("r", B + 4)],
            &[("p", B), ("q", B + 2), ("r", B + 4)],
        );
    }

    #[test]
    fn a_full_range_is_an_error() {
        let full = Table((0..RANGE).map(|i| (format!("a{i}"), B + i)).collect());
        let err = assign(&full, &["late"], B).unwrap_err();
        assert_eq!(err.app, "late");
        assert!(assign(&full, &["a7"], B).is_ok());
    }

    #[test]
    fn the_file_round_trips_and_refuses_nonsense() {
        let t = table(&[("todo", B), ("aaa", B + 1), ("old", 100_000)]);
        let text = t.render();
        assert_eq!(Table::parse(&text).unwrap(), t);
        assert!(text.find("old 100000").unwrap() < text.find("todo 200000").unwrap());
        let bad = |text: &str, line: usize, want: &str| {
            let (l, reason) = Table::parse(text).unwrap_err();
            assert_eq!(l, line, "{text:?}");
            assert!(reason.contains(want), "{reason:?} lacks {want:?}");
        };
        bad("a 1\nb\n", 2, "expected `NAME UID`");
        bad("a 1 2\n", 1, "expected `NAME UID`");
        bad("# c\na x\n", 2, "`x` is not a uid");
        bad("a 1\nb 1\n", 2, "uid 1 is already `a`'s");
        bad("a 1\na 2\n", 2, "`a` appears twice");
    }

    #[test]
    fn commit_records_once_and_keeps() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        assert_eq!(read(&state).unwrap(), Table::default());
        let first = commit(&state, &["todo"], B).unwrap();
        assert_eq!(first.new, [("todo".to_owned(), B)]);
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&state).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        let second = commit(&state, &["aaa", "todo"], B).unwrap();
        assert_eq!(second.uids["todo"], B);
        assert_eq!(second.uids["aaa"], B + 1);
        let again = commit(&state, &["todo"], B).unwrap();
        assert!(again.new.is_empty());
        assert_eq!(read(&state).unwrap().get("aaa"), Some(B + 1));
        assert!(!state.join(format!("{FILE}.tmp")).exists());
    }
}
