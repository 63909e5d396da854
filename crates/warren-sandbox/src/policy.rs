//! What a zygote's confinement is made of, as the master decides it and the worker applies it.
//!
//! The master builds a [`Policy`] from an app's config and hands it to `warren-worker` as one
//! command-line argument ([`Policy::encode`], `key=value` lines); the worker decodes it
//! ([`Policy::decode`]) before it touches Python. Keeping it plain text keeps the worker free of
//! a serialisation framework and makes `ps` show exactly what a zygote was told.

use std::path::PathBuf;

/// One confinement mechanism, as reported by `warren doctor` and required by an app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mechanism {
    Cgroups,
    Namespaces,
    Landlock,
    Seccomp,
    Rlimits,
}

impl Mechanism {
    pub const ALL: [Mechanism; 5] = [
        Mechanism::Cgroups,
        Mechanism::Namespaces,
        Mechanism::Landlock,
        Mechanism::Seccomp,
        Mechanism::Rlimits,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Cgroups => "cgroups",
            Mechanism::Namespaces => "namespaces",
            Mechanism::Landlock => "landlock",
            Mechanism::Seccomp => "seccomp",
            Mechanism::Rlimits => "rlimits",
        }
    }

    pub fn parse(s: &str) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.name() == s)
    }
}

impl std::fmt::Display for Mechanism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything the worker needs to confine a zygote (cgroup membership is the master's part).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The app's name: the host name inside the sandbox and the name in guard messages.
    pub app: String,
    /// The uid and gid outside the user namespace that root inside maps to (root only; an
    /// unprivileged warren maps its own uid).
    pub uid: u32,
    /// Directories bound read-only at the same path: the Python prefix, the app, its venv.
    pub read_only: Vec<PathBuf>,
    /// Directories bound read-write at the same path (`sandbox.writable`).
    pub writable: Vec<PathBuf>,
    /// Size of the private `/tmp` (tmpfs, `noexec`).
    pub tmp_bytes: u64,
    /// `RLIMIT_NOFILE`.
    pub nofile: u64,
    /// `RLIMIT_FSIZE`: the largest file the app may write.
    pub fsize_bytes: u64,
    /// Whether workers may start threads (`clone` with `CLONE_THREAD`).
    pub threads: bool,
    /// PEP 578 audit hooks that turn forbidden operations into clear Python errors.
    pub python_guards: bool,
    /// Mechanisms this app may run without when the kernel lacks them.
    pub optional: Vec<Mechanism>,
    /// Mechanisms this kernel lacks (as `warren doctor` found them); those also in `optional`
    /// are skipped.
    pub unavailable: Vec<Mechanism>,
}

impl Policy {
    /// `key=value` lines; list keys repeat.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let mut put = |k: &str, v: &str| {
            out.push_str(k);
            out.push('=');
            out.push_str(v);
            out.push('\n');
        };
        put("app", &self.app);
        put("uid", &self.uid.to_string());
        for p in &self.read_only {
            put("ro", &p.to_string_lossy());
        }
        for p in &self.writable {
            put("rw", &p.to_string_lossy());
        }
        put("tmp_bytes", &self.tmp_bytes.to_string());
        put("nofile", &self.nofile.to_string());
        put("fsize_bytes", &self.fsize_bytes.to_string());
        put("threads", if self.threads { "1" } else { "0" });
        put("python_guards", if self.python_guards { "1" } else { "0" });
        for m in &self.optional {
            put("optional", m.name());
        }
        for m in &self.unavailable {
            put("unavailable", m.name());
        }
        out
    }

    /// The inverse of [`Policy::encode`]; every key is required once except the lists.
    pub fn decode(text: &str) -> Result<Policy, String> {
        let mut p = Policy {
            app: String::new(),
            uid: u32::MAX,
            read_only: Vec::new(),
            writable: Vec::new(),
            tmp_bytes: 0,
            nofile: 0,
            fsize_bytes: 0,
            threads: false,
            python_guards: true,
            optional: Vec::new(),
            unavailable: Vec::new(),
        };
        let num = |k: &str, v: &str| -> Result<u64, String> {
            v.parse()
                .map_err(|_| format!("policy: {k}: `{v}` is not a number"))
        };
        let flag = |k: &str, v: &str| -> Result<bool, String> {
            match v {
                "0" => Ok(false),
                "1" => Ok(true),
                _ => Err(format!("policy: {k}: `{v}` is not 0 or 1")),
            }
        };
        for line in text.lines().filter(|l| !l.is_empty()) {
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| format!("policy: `{line}` is not key=value"))?;
            match k {
                "app" => p.app = v.to_owned(),
                "uid" => p.uid = u32::try_from(num(k, v)?).map_err(|_| "policy: uid too large")?,
                "ro" => p.read_only.push(PathBuf::from(v)),
                "rw" => p.writable.push(PathBuf::from(v)),
                "tmp_bytes" => p.tmp_bytes = num(k, v)?,
                "nofile" => p.nofile = num(k, v)?,
                "fsize_bytes" => p.fsize_bytes = num(k, v)?,
                "threads" => p.threads = flag(k, v)?,
                "python_guards" => p.python_guards = flag(k, v)?,
                "optional" => p.optional.push(
                    Mechanism::parse(v).ok_or_else(|| format!("policy: unknown mechanism {v}"))?,
                ),
                "unavailable" => p.unavailable.push(
                    Mechanism::parse(v).ok_or_else(|| format!("policy: unknown mechanism {v}"))?,
                ),
                _ => return Err(format!("policy: unknown key {k}")),
            }
        }
        if p.app.is_empty() || p.uid == u32::MAX || p.tmp_bytes == 0 || p.nofile == 0 {
            return Err("policy: app, uid, tmp_bytes and nofile are required".into());
        }
        Ok(p)
    }

    /// Whether the app may run without `m`.
    pub fn allows_missing(&self, m: Mechanism) -> bool {
        self.optional.contains(&m)
    }

    /// Whether `m` is left out: the kernel lacks it and the app waived it.
    pub fn skips(&self, m: Mechanism) -> bool {
        self.unavailable.contains(&m) && self.allows_missing(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Policy {
        Policy {
            app: "hello".into(),
            uid: 200_001,
            read_only: vec!["/usr".into(), "/srv/app with space".into()],
            writable: vec!["/var/data".into()],
            tmp_bytes: 16 << 20,
            nofile: 1024,
            fsize_bytes: 64 << 20,
            threads: true,
            python_guards: false,
            optional: vec![Mechanism::Cgroups],
            unavailable: vec![Mechanism::Cgroups],
        }
    }

    #[test]
    fn round_trips() {
        let p = sample();
        assert_eq!(Policy::decode(&p.encode()).unwrap(), p);
    }

    #[test]
    fn refuses_unknown_keys_and_missing_fields() {
        let bad = sample().encode() + "surprise=1\n";
        assert!(Policy::decode(&bad).unwrap_err().contains("surprise"));
        assert!(Policy::decode("app=x\n").is_err());
        assert!(
            Policy::decode(&sample().encode().replace("threads=1", "threads=yes"))
                .unwrap_err()
                .contains("threads")
        );
    }
}
