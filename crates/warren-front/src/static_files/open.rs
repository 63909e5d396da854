//! The I/O half of static file serving: opening a file beneath its static directory with no
//! symlink followed at any component, and deciding from its `fstat` whether it may be served.
//!
//! The front runs as root on the host, and a static directory may be writable by a tenant (an
//! app's `sandbox.writable`, or a deploy by its owner). So nothing a path component is made of
//! is trusted: the directory itself is reached with `openat2(AT_FDCWD, dir,
//! RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)` (it was canonicalized when the config was
//! loaded, so a symlink there now was put there since), the file beneath that descriptor with
//! `RESOLVE_BENEATH` as well. Where the kernel has no `openat2` (ENOSYS, before 5.6) the same
//! paths are walked one component at a time with `O_NOFOLLOW` on each, which refuses the same
//! things. Files are opened `O_RDONLY | O_NONBLOCK | O_NOCTTY`, so that a FIFO cannot block the
//! thread; only regular files with a single link are served (a hard link can name a file
//! outside the directory, and nothing on the path shows it).
//!
//! These are blocking calls: the caller runs them with `spawn_blocking`.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use super::decide::{CleanPath, Validators};

/// How a served file is opened: read-only, never waiting (a FIFO with no writer), never
/// becoming the front's controlling terminal.
const READ: OFlags = OFlags::RDONLY
    .union(OFlags::NONBLOCK)
    .union(OFlags::NOCTTY)
    .union(OFlags::CLOEXEC);

/// How a directory on the way is opened: a handle to resolve names beneath, no read access.
const DIR: OFlags = OFlags::PATH.union(OFlags::DIRECTORY).union(OFlags::CLOEXEC);

const NO_LINKS: ResolveFlags = ResolveFlags::NO_SYMLINKS.union(ResolveFlags::NO_MAGICLINKS);

/// Set once `openat2` answered ENOSYS: every later open walks instead of asking again.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// What a path names, as far as serving it goes.
#[derive(Debug)]
pub enum Found {
    /// A regular file with one link, open for reading.
    File { file: File, validators: Validators },
    /// A directory asked for without a trailing slash: the client is redirected to it.
    Directory,
    /// Not served (a 404); why, for the debug log.
    Refused(Refusal),
}

/// Why a path is not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No such file (or a file where a directory was expected, or a name too long).
    Missing,
    /// A symlink at some component (ELOOP), the static directory's own path included.
    Symlink,
    /// Resolution would leave the static directory (EXDEV).
    Escape,
    /// Permission denied.
    Denied,
    /// A directory without `index.html`'s regular file, a device, a FIFO, a socket.
    NotRegular,
    /// A regular file with more than one hard link: another name may sit outside.
    HardLinked,
}

/// How names are resolved: `openat2`, or the walk with `O_NOFOLLOW` on each component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    Openat2,
    Walk,
}

impl How {
    /// `openat2` unless the kernel already said it has none.
    pub fn detect() -> How {
        if NO_OPENAT2.load(Relaxed) {
            How::Walk
        } else {
            How::Openat2
        }
    }
}

/// Looks `path` up beneath the static directory `dir` (absolute and canonical). `Err` only for
/// an unexpected failure (a 500): every refusal is `Found::Refused`.
pub fn find(how: How, dir: &Path, path: &CleanPath) -> Result<Found, Errno> {
    match lookup(how, dir, path) {
        Ok(found) => Ok(found),
        Err(errno) => refusal(errno).map(Found::Refused).ok_or(errno),
    }
}

fn lookup(how: How, dir: &Path, path: &CleanPath) -> Result<Found, Errno> {
    let root = open_dir(how, dir)?;
    let segments: Vec<&str> = path.segments.iter().map(String::as_str).collect();
    if path.trailing_slash {
        // A directory is asked for: opened as one (a file there is ENOTDIR, a 404, as
        // `ServeDir` answered), so that nothing else is ever opened for reading, then its index.
        let dir = open_beneath(how, root.as_fd(), &segments, DIR)?;
        let index = open_beneath(how, dir.as_fd(), &["index.html"], READ)?;
        let stat = rustix::fs::fstat(&index)?;
        return Ok(match FileType::from_raw_mode(stat.st_mode) {
            FileType::RegularFile => regular(index, &stat),
            _ => Found::Refused(Refusal::NotRegular),
        });
    }
    let fd = open_beneath(how, root.as_fd(), &segments, READ)?;
    let stat = rustix::fs::fstat(&fd)?;
    Ok(match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile => regular(fd, &stat),
        FileType::Directory => Found::Directory,
        _ => Found::Refused(Refusal::NotRegular),
    })
}

fn regular(fd: OwnedFd, stat: &rustix::fs::Stat) -> Found {
    if stat.st_nlink > 1 {
        return Found::Refused(Refusal::HardLinked);
    }
    Found::File {
        file: File::from(fd),
        validators: Validators::new(u64::try_from(stat.st_size).unwrap_or(0), stat.st_mtime),
    }
}

/// The errors that mean "not served" rather than "something is wrong".
fn refusal(errno: Errno) -> Option<Refusal> {
    Some(match errno {
        Errno::NOENT | Errno::NOTDIR | Errno::NAMETOOLONG => Refusal::Missing,
        Errno::LOOP => Refusal::Symlink,
        Errno::XDEV => Refusal::Escape,
        Errno::ACCESS | Errno::PERM => Refusal::Denied,
        // ENXIO: a Unix socket; ENODEV: a device with no driver.
        Errno::NXIO | Errno::NODEV => Refusal::NotRegular,
        _ => return None,
    })
}

/// The static directory itself, by its absolute path, no symlink followed on the way.
fn open_dir(how: How, dir: &Path) -> Result<OwnedFd, Errno> {
    if how == How::Openat2 {
        match openat2(rustix::fs::CWD, dir.as_os_str(), DIR, NO_LINKS) {
            Err(Errno::NOSYS) => NO_OPENAT2.store(true, Relaxed),
            other => return other,
        }
    }
    let mut names = Vec::new();
    for component in dir.components() {
        match component {
            Component::RootDir => {}
            Component::Normal(name) => names.push(name),
            // A configured directory is absolute and canonical; anything else is refused.
            _ => return Err(Errno::INVAL),
        }
    }
    if !dir.is_absolute() {
        return Err(Errno::INVAL);
    }
    let root = rustix::fs::open("/", DIR, Mode::empty())?;
    walk_nofollow(root.as_fd(), &names, DIR)
}

/// `segments` (names from [`CleanPath`]: no `/`, `.` or `..`) beneath `dir`, opened `last`.
fn open_beneath(
    how: How,
    dir: BorrowedFd<'_>,
    segments: &[&str],
    last: OFlags,
) -> Result<OwnedFd, Errno> {
    if segments
        .iter()
        .any(|s| s.is_empty() || s.contains('/') || *s == "." || *s == "..")
    {
        // Never reaches here from a request (clean_path refuses these); refused anyway,
        // since the walk alone would let `..` out.
        return Err(Errno::XDEV);
    }
    if how == How::Openat2 {
        let path = if segments.is_empty() {
            ".".to_owned()
        } else {
            segments.join("/")
        };
        match openat2(
            dir,
            OsStr::new(&path),
            last,
            ResolveFlags::BENEATH | NO_LINKS,
        ) {
            Err(Errno::NOSYS) => NO_OPENAT2.store(true, Relaxed),
            other => return other,
        }
    }
    let names: Vec<&OsStr> = segments.iter().map(OsStr::new).collect();
    walk_nofollow(dir, &names, last)
}

/// `openat2`, asked again when the kernel saw a rename or mount race (EAGAIN) or a signal.
fn openat2(
    dir: BorrowedFd<'_>,
    path: &OsStr,
    flags: OFlags,
    resolve: ResolveFlags,
) -> Result<OwnedFd, Errno> {
    let mut tries = 0;
    loop {
        match rustix::fs::openat2(dir, path, flags, Mode::empty(), resolve) {
            Err(Errno::AGAIN | Errno::INTR) if tries < 8 => tries += 1,
            other => return other,
        }
    }
}

/// The fallback without `openat2`: each name opened beneath the previous one with
/// `O_NOFOLLOW` (directories on the way as `O_PATH`), the last with `last`, so that a symlink
/// anywhere is ELOOP. No name is `..` (the caller checked), so the walk never climbs out of
/// `start`. No names: `start` itself, reopened with `last`.
pub fn walk_nofollow(
    start: BorrowedFd<'_>,
    names: &[&OsStr],
    last: OFlags,
) -> Result<OwnedFd, Errno> {
    let Some((final_name, dirs)) = names.split_last() else {
        return rustix::fs::openat(start, ".", last, Mode::empty());
    };
    let mut current: Option<OwnedFd> = None;
    for name in dirs {
        let at = current.as_ref().map_or(start, |fd| fd.as_fd());
        current = Some(open_nofollow(at, name, DIR)?);
    }
    let at = current.as_ref().map_or(start, |fd| fd.as_fd());
    open_nofollow(at, final_name, last)
}

/// One name beneath `at`, not followed if it is a symlink (ELOOP).
fn open_nofollow(at: BorrowedFd<'_>, name: &OsStr, flags: OFlags) -> Result<OwnedFd, Errno> {
    if !flags.contains(OFlags::PATH) {
        return rustix::fs::openat(at, name, flags | OFlags::NOFOLLOW, Mode::empty());
    }
    // `O_PATH | O_NOFOLLOW` opens a symlink itself rather than failing (and with
    // `O_DIRECTORY` it fails as ENOTDIR): look at what was opened instead.
    let fd = rustix::fs::openat(
        at,
        name,
        (flags - OFlags::DIRECTORY) | OFlags::NOFOLLOW,
        Mode::empty(),
    )?;
    match FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode) {
        FileType::Symlink => Err(Errno::LOOP),
        FileType::Directory => Ok(fd),
        _ if flags.contains(OFlags::DIRECTORY) => Err(Errno::NOTDIR),
        _ => Ok(fd),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::unix::fs::symlink;

    use super::*;
    use crate::static_files::decide::clean_path;

    /// What a lookup should come to.
    #[derive(Debug, PartialEq, Eq)]
    enum Expect {
        Served(&'static str),
        Directory,
        Refused(Refusal),
    }

    /// A static directory `site/` inside a temporary directory, with a file outside it.
    struct Tree {
        tmp: tempfile::TempDir,
    }

    impl Tree {
        fn new() -> Tree {
            let tmp = tempfile::tempdir().unwrap();
            let t = tmp.path();
            let site = t.join("site");
            std::fs::create_dir_all(site.join("sub/deeper")).unwrap();
            std::fs::create_dir_all(site.join("noindex")).unwrap();
            std::fs::create_dir_all(site.join("dirindex/index.html")).unwrap();
            std::fs::write(site.join("a.txt"), "a").unwrap();
            std::fs::write(site.join("sub/b.txt"), "b").unwrap();
            std::fs::write(site.join("sub/index.html"), "sub index").unwrap();
            std::fs::write(site.join("sub/deeper/c.txt"), "c").unwrap();
            std::fs::write(t.join("secret"), "secret").unwrap();
            std::fs::create_dir(t.join("outside")).unwrap();
            std::fs::write(t.join("outside/index.html"), "secret index").unwrap();
            symlink(t.join("secret"), site.join("to-secret")).unwrap();
            symlink("a.txt", site.join("to-a")).unwrap();
            symlink(t.join("outside"), site.join("to-outside")).unwrap();
            symlink("sub", site.join("to-sub")).unwrap();
            symlink("/proc/self/root/etc/passwd", site.join("magic")).unwrap();
            symlink(t.join("secret"), site.join("sub/index-link")).unwrap();
            std::fs::hard_link(t.join("secret"), site.join("hard")).unwrap();
            rustix::fs::mkfifoat(rustix::fs::CWD, site.join("fifo"), Mode::RUSR | Mode::WUSR)
                .unwrap();
            std::fs::create_dir(site.join("linkindex")).unwrap();
            symlink(site.join("a.txt"), site.join("linkindex/index.html")).unwrap();
            // The static directory itself reached through a symlink, and below one.
            symlink(&site, t.join("site-link")).unwrap();
            symlink(t, t.join("parent-link")).unwrap();
            Tree { tmp }
        }

        fn site(&self) -> std::path::PathBuf {
            self.tmp.path().join("site")
        }
    }

    #[track_caller]
    fn check(how: How, dir: &Path, rest: &str, expected: Expect) {
        let path = clean_path(rest).expect("a clean path");
        let got = match find(how, dir, &path).expect("no unexpected error") {
            Found::File { mut file, .. } => {
                let mut s = String::new();
                file.read_to_string(&mut s).unwrap();
                Expect::Served(Box::leak(s.into_boxed_str()))
            }
            Found::Directory => Expect::Directory,
            Found::Refused(r) => Expect::Refused(r),
        };
        assert_eq!(got, expected, "{how:?} {} {rest}", dir.display());
    }

    fn lookups(how: How) {
        use Expect::*;
        use Refusal::*;
        let tree = Tree::new();
        let site = tree.site();
        let t = tree.tmp.path();
        check(how, &site, "/a.txt", Served("a"));
        check(how, &site, "/sub/b.txt", Served("b"));
        check(how, &site, "/sub/deeper/c.txt", Served("c"));
        check(how, &site, "/sub/", Served("sub index"));
        check(how, &site, "/sub", Directory);
        check(how, &site, "", Directory);
        check(how, &site, "/noindex/", Refused(Missing));
        check(how, &site, "/dirindex/", Refused(NotRegular));
        check(how, &site, "/linkindex/", Refused(Symlink));
        check(how, &site, "/nope", Refused(Missing));
        check(how, &site, "/a.txt/", Refused(Missing));
        check(how, &site, "/a.txt/x", Refused(Missing));
        // No symlink at all: out of the directory, inside it, as a directory component,
        // or a magic link.
        check(how, &site, "/to-secret", Refused(Symlink));
        check(how, &site, "/to-a", Refused(Symlink));
        check(how, &site, "/to-outside/index.html", Refused(Symlink));
        check(how, &site, "/to-outside/", Refused(Symlink));
        check(how, &site, "/to-sub/b.txt", Refused(Symlink));
        check(how, &site, "/magic", Refused(Symlink));
        check(how, &site, "/sub/index-link", Refused(Symlink));
        check(how, &site, "/hard", Refused(HardLinked));
        check(how, &site, "/fifo", Refused(NotRegular));
        check(how, &site, "/fifo/", Refused(Missing));
        // The static directory itself behind a symlink, or below one.
        check(how, &t.join("site-link"), "/a.txt", Refused(Symlink));
        check(how, &t.join("parent-link/site"), "/a.txt", Refused(Symlink));
        check(how, &t.join("parent-link/site"), "/", Refused(Symlink));
    }

    #[test]
    fn lookups_with_openat2() {
        lookups(How::Openat2);
    }

    #[test]
    fn lookups_walking_with_o_nofollow() {
        lookups(How::Walk);
    }

    #[test]
    fn the_walk_refuses_what_it_cannot_see() {
        #[track_caller]
        fn check(names: &[&str], last: OFlags, expected: Result<(), Errno>) {
            let tree = Tree::new();
            let site = rustix::fs::open(tree.site(), DIR, Mode::empty()).unwrap();
            let names: Vec<&OsStr> = names.iter().map(OsStr::new).collect();
            let got = walk_nofollow(site.as_fd(), &names, last).map(drop);
            assert_eq!(got, expected, "{names:?}");
        }
        check(&["a.txt"], READ, Ok(()));
        check(&["sub"], DIR, Ok(()));
        check(&["a.txt"], DIR, Err(Errno::NOTDIR));
        check(&["to-sub"], DIR, Err(Errno::LOOP));
        check(&["to-sub"], OFlags::PATH, Err(Errno::LOOP));
        check(&["to-sub", "b.txt"], READ, Err(Errno::LOOP));
        check(&["to-outside", "index.html"], READ, Err(Errno::LOOP));
        check(&["to-a"], READ, Err(Errno::LOOP));
        check(&["sub", "index-link"], READ, Err(Errno::LOOP));
        check(&["a.txt", "x"], READ, Err(Errno::NOTDIR));
    }

    #[test]
    fn segments_that_could_climb_are_refused() {
        #[track_caller]
        fn check(how: How, segments: &[&str]) {
            let tree = Tree::new();
            let site = rustix::fs::open(tree.site(), DIR, Mode::empty()).unwrap();
            let got = open_beneath(how, site.as_fd(), segments, READ).map(drop);
            assert_eq!(got, Err(Errno::XDEV), "{how:?} {segments:?}");
        }
        for how in [How::Openat2, How::Walk] {
            check(how, &["..", "secret"]);
            check(how, &["sub", "..", "..", "secret"]);
            check(how, &["../secret"]);
            check(how, &["."]);
            check(how, &[""]);
        }
    }
}
