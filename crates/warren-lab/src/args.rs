//! The command line of `warren loadtest` and its validation into a [`Plan`].
//!
//! Every refusal happens here, before any request is sent: a target or metrics URL that is not
//! on loopback, a pattern missing the flag it needs (or given one it would ignore), a rate,
//! duration or total request count beyond the lab's bounds.
//!
//! **Invariant:** validation is pure (no DNS, no I/O): `localhost` is mapped to `127.0.0.1`
//! here, so the generator can only ever connect to a loopback address.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderValue, Uri};

use crate::pattern::{Pattern, PatternKind};
use crate::schedule::expected_sends;

/// The longest test accepted, seconds.
pub const MAX_DURATION_S: f64 = 3600.0;
/// The highest rate accepted, requests/s. One loopback generator on a small machine cannot
/// honestly offer more; beyond it the generator, not the server, would be measured.
pub const MAX_RATE: f64 = 50_000.0;
/// The most requests one test may schedule (every outcome is kept in memory until the end).
pub const MAX_REQUESTS: u64 = 5_000_000;
/// The highest `--max-in-flight` accepted (each in-flight request holds a socket).
pub const MAX_IN_FLIGHT: usize = 100_000;

/// `warren loadtest`: offer an open-loop load (a fixed arrival schedule) to an HTTP app on
/// loopback, record a per-second time series (CSV) and chart it (PNG).
#[derive(clap::Args, Debug, Clone)]
pub struct LoadtestArgs {
    /// Target URL on loopback: http://127.0.0.1:PORT/path (any 127.x.y.z),
    /// http://localhost:PORT/, or the IPv6 loopback ::1 in brackets
    #[arg(long, value_name = "URL")]
    pub url: String,

    /// Host header to send (e.g. hello.localhost, to reach that app through warren's front);
    /// default: the URL's host and port
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,

    /// Arrival-rate pattern
    #[arg(long, value_enum, default_value_t = PatternKind::Constant)]
    pub pattern: PatternKind,

    /// Base rate, requests/s (the only rate for constant)
    #[arg(long, value_name = "RATE")]
    pub from: f64,

    /// Second rate, requests/s: after the step, during the spike, at the end of the ramp, the
    /// other extreme of the sine (required by step, spike, ramp, sine)
    #[arg(long, value_name = "RATE")]
    pub to: Option<f64>,

    /// When the step or spike happens, seconds from the start (required by step and spike)
    #[arg(long, value_name = "SECONDS")]
    pub at: Option<f64>,

    /// How long the spike lasts, seconds
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    pub spike_duration: f64,

    /// Period of the sine, seconds
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    pub period: f64,

    /// Length of the schedule, seconds (at most 3600); the run then waits for the requests
    /// still in flight, up to --timeout
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    pub duration: f64,

    /// Seconds to keep sampling --metrics after the schedule ends (at most 3600), so that the
    /// scale-down shows on the chart (the idle timeout and the stable window are often a
    /// minute or more)
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 0.0,
        requires = "metrics"
    )]
    pub cooldown: f64,

    /// warren's Prometheus endpoint to sample once a second, loopback only
    /// (e.g. http://127.0.0.1:9090/metrics)
    #[arg(long, value_name = "URL")]
    pub metrics: Option<String>,

    /// The app label to read from the metrics; default: all apps added up
    #[arg(long, value_name = "NAME", requires = "metrics")]
    pub app: Option<String>,

    /// Where to write the per-second CSV
    #[arg(long, value_name = "PATH", default_value = "loadtest.csv")]
    pub csv: PathBuf,

    /// Where to draw the PNG chart
    #[arg(long, value_name = "PATH", default_value = "loadtest.png")]
    pub png: PathBuf,

    /// Per-request timeout, seconds, from the send to the end of the response body
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub timeout: f64,

    /// Most requests outstanding at once; a scheduled send beyond it is not sent and is
    /// reported as dropped by the generator
    #[arg(long, value_name = "N", default_value_t = 2000)]
    pub max_in_flight: usize,
}

/// Why the arguments were refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ArgsError {
    /// A URL that does not parse or is not plain `http://host[:port]/...`.
    #[error("{flag} {url:?}: {reason}")]
    BadUrl {
        /// The flag that carried it.
        flag: &'static str,
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A URL whose host is not a loopback address.
    #[error(
        "{flag} {url:?}: host {host:?} is not loopback; the load lab only targets 127.0.0.0/8, \
         [::1] or localhost (to reach an app by name, use --url http://127.0.0.1:PORT/ --host NAME)"
    )]
    NotLoopback {
        /// The flag that carried it.
        flag: &'static str,
        /// The URL as given.
        url: String,
        /// Its host.
        host: String,
    },
    /// A pattern that needs a flag that was not given.
    #[error("--pattern {pattern} needs {flag}")]
    Missing {
        /// The pattern's name.
        pattern: &'static str,
        /// The missing flag.
        flag: &'static str,
    },
    /// A flag the chosen pattern would silently ignore.
    #[error("{flag} has no effect with --pattern {pattern}")]
    Unused {
        /// The pattern's name.
        pattern: &'static str,
        /// The flag given in vain.
        flag: &'static str,
    },
    /// A number outside its bounds.
    #[error("{flag} {value}: {reason}")]
    OutOfRange {
        /// The flag.
        flag: &'static str,
        /// The value given.
        value: String,
        /// The bound it breaks.
        reason: String,
    },
    /// A `--host` that cannot be a header value.
    #[error("--host {0:?} is not a valid Host header value")]
    BadHost(String),
    /// A schedule with more requests than the lab keeps in memory.
    #[error(
        "the schedule holds {total} requests, more than the {max} one run may send; \
         shorten --duration or lower the rates"
    )]
    TooManyRequests {
        /// Requests the schedule would send.
        total: u64,
        /// [`MAX_REQUESTS`].
        max: u64,
    },
}

/// A loopback HTTP endpoint, resolved without DNS.
#[derive(Debug, Clone)]
pub struct Target {
    /// The URL as given, for display.
    pub url: String,
    /// The URL to request, its host replaced by the loopback IP (`localhost` → `127.0.0.1`).
    pub uri: Uri,
    /// The Host header to send.
    pub host: HeaderValue,
}

/// Validated arguments: everything the run needs, already checked.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Where the load goes.
    pub target: Target,
    /// The arrival-rate pattern.
    pub pattern: Pattern,
    /// Length of the schedule, seconds.
    pub duration_s: f64,
    /// Seconds of sampling (and of rows) after the schedule ends, with no load.
    pub cooldown_s: f64,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Most requests outstanding at once.
    pub max_in_flight: usize,
    /// warren's metrics endpoint, if given.
    pub metrics: Option<Target>,
    /// The app label to select, if given.
    pub app: Option<String>,
    /// CSV output path.
    pub csv: PathBuf,
    /// PNG output path.
    pub png: PathBuf,
    /// Requests the schedule will offer.
    pub scheduled: u64,
}

impl Plan {
    /// One line describing the pattern, for the summary and the chart's title.
    pub fn describe_pattern(&self) -> String {
        let r = |v: f64| format!("{v}");
        match self.pattern {
            Pattern::Constant { rate } => format!("constant {} req/s", r(rate)),
            Pattern::Step { from, to, at } => {
                format!("step {} → {} req/s at {} s", r(from), r(to), r(at))
            }
            Pattern::Spike {
                from,
                to,
                at,
                duration,
            } => format!(
                "spike {} → {} req/s during {}–{} s",
                r(from),
                r(to),
                r(at),
                r(at + duration)
            ),
            Pattern::Ramp { from, to, .. } => format!("ramp {} → {} req/s", r(from), r(to)),
            Pattern::Sine { from, to, period } => {
                format!("sine {} ↔ {} req/s, period {} s", r(from), r(to), r(period))
            }
        }
    }
}

impl LoadtestArgs {
    /// Checks the arguments and resolves them into a [`Plan`]; nothing is sent.
    pub fn plan(&self) -> Result<Plan, ArgsError> {
        let target = loopback_target("--url", &self.url, self.host.as_deref())?;
        let metrics = self
            .metrics
            .as_deref()
            .map(|m| loopback_target("--metrics", m, None))
            .transpose()?;

        let duration_s = seconds("--duration", self.duration)?;
        if duration_s > MAX_DURATION_S {
            return Err(out_of_range(
                "--duration",
                self.duration,
                format!("at most {MAX_DURATION_S} s"),
            ));
        }
        let cooldown_s = seconds_or_zero("--cooldown", self.cooldown)?;
        if cooldown_s > MAX_DURATION_S {
            return Err(out_of_range(
                "--cooldown",
                self.cooldown,
                format!("at most {MAX_DURATION_S} s"),
            ));
        }
        let timeout = seconds("--timeout", self.timeout)?;
        if timeout > MAX_DURATION_S {
            return Err(out_of_range(
                "--timeout",
                self.timeout,
                format!("at most {MAX_DURATION_S} s"),
            ));
        }
        if self.max_in_flight == 0 || self.max_in_flight > MAX_IN_FLIGHT {
            return Err(out_of_range(
                "--max-in-flight",
                self.max_in_flight as f64,
                format!("between 1 and {MAX_IN_FLIGHT}"),
            ));
        }

        let pattern = self.pattern(duration_s)?;
        let scheduled = expected_sends(&pattern, duration_s);
        if scheduled > MAX_REQUESTS {
            return Err(ArgsError::TooManyRequests {
                total: scheduled,
                max: MAX_REQUESTS,
            });
        }
        Ok(Plan {
            target,
            pattern,
            duration_s,
            cooldown_s,
            timeout: Duration::from_secs_f64(timeout),
            max_in_flight: self.max_in_flight,
            metrics,
            app: self.app.clone(),
            csv: self.csv.clone(),
            png: self.png.clone(),
            scheduled,
        })
    }

    fn pattern(&self, duration_s: f64) -> Result<Pattern, ArgsError> {
        let kind = self.pattern;
        let name = kind.name();
        let from = rate("--from", self.from)?;
        let to = || -> Result<f64, ArgsError> {
            let to = self.to.ok_or(ArgsError::Missing {
                pattern: name,
                flag: "--to RATE",
            })?;
            rate("--to", to)
        };
        let at = || -> Result<f64, ArgsError> {
            let at = self.at.ok_or(ArgsError::Missing {
                pattern: name,
                flag: "--at SECONDS",
            })?;
            let at = seconds_or_zero("--at", at)?;
            if at >= duration_s {
                return Err(out_of_range(
                    "--at",
                    at,
                    format!("must fall inside --duration {duration_s} s"),
                ));
            }
            Ok(at)
        };
        let unused = |flag: &'static str| ArgsError::Unused {
            pattern: name,
            flag,
        };
        let no_at = || {
            if self.at.is_some() {
                Err(unused("--at"))
            } else {
                Ok(())
            }
        };
        Ok(match kind {
            PatternKind::Constant => {
                if self.to.is_some() {
                    return Err(unused("--to"));
                }
                no_at()?;
                Pattern::Constant { rate: from }
            }
            PatternKind::Step => Pattern::Step {
                from,
                to: to()?,
                at: at()?,
            },
            PatternKind::Spike => Pattern::Spike {
                from,
                to: to()?,
                at: at()?,
                duration: seconds("--spike-duration", self.spike_duration)?,
            },
            PatternKind::Ramp => {
                no_at()?;
                Pattern::Ramp {
                    from,
                    to: to()?,
                    over: duration_s,
                }
            }
            PatternKind::Sine => {
                no_at()?;
                Pattern::Sine {
                    from,
                    to: to()?,
                    period: seconds("--period", self.period)?,
                }
            }
        })
    }
}

fn out_of_range(flag: &'static str, value: f64, reason: String) -> ArgsError {
    ArgsError::OutOfRange {
        flag,
        value: format!("{value}"),
        reason,
    }
}

/// A rate: finite, 0 ≤ r ≤ [`MAX_RATE`].
fn rate(flag: &'static str, r: f64) -> Result<f64, ArgsError> {
    if r.is_finite() && (0.0..=MAX_RATE).contains(&r) {
        Ok(r)
    } else {
        Err(out_of_range(
            flag,
            r,
            format!("a rate between 0 and {MAX_RATE} requests/s"),
        ))
    }
}

/// A strictly positive, finite number of seconds.
fn seconds(flag: &'static str, s: f64) -> Result<f64, ArgsError> {
    if s.is_finite() && s > 0.0 {
        Ok(s)
    } else {
        Err(out_of_range(flag, s, "a positive number of seconds".into()))
    }
}

/// A non-negative, finite number of seconds.
fn seconds_or_zero(flag: &'static str, s: f64) -> Result<f64, ArgsError> {
    if s.is_finite() && s >= 0.0 {
        Ok(s)
    } else {
        Err(out_of_range(flag, s, "seconds, 0 or more".into()))
    }
}

/// Parses `url` and accepts it only if it is `http://` to a loopback host: `localhost`, an
/// address in 127.0.0.0/8, or `[::1]`. `localhost` becomes `127.0.0.1` in the URI (no DNS, so
/// no `/etc/hosts` entry can point the load elsewhere); the Host header is `host` if given,
/// else the URL's own `host[:port]`.
pub fn loopback_target(
    flag: &'static str,
    url: &str,
    host: Option<&str>,
) -> Result<Target, ArgsError> {
    let bad = |reason: &str| ArgsError::BadUrl {
        flag,
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let uri: Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => return Err(bad("https is not supported; use http:// on loopback")),
        Some(_) => return Err(bad("only http:// URLs are supported")),
        None => return Err(bad("needs a scheme and host, like http://127.0.0.1:8080/")),
    }
    let authority = uri
        .authority()
        .ok_or_else(|| bad("needs a host, like http://127.0.0.1:8080/"))?;
    if authority.as_str().contains('@') {
        return Err(bad("credentials in the URL are not supported"));
    }
    let raw_host = authority.host();
    let bare = raw_host.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr =
        if bare.eq_ignore_ascii_case("localhost") || bare.eq_ignore_ascii_case("localhost.") {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            match bare.parse::<IpAddr>() {
                Ok(ip) if ip.is_loopback() => ip,
                _ => {
                    return Err(ArgsError::NotLoopback {
                        flag,
                        url: url.to_string(),
                        host: raw_host.to_string(),
                    });
                }
            }
        };
    // `Authority::port_u16` is `None` both without a port and with an unusable one.
    let port = match authority.as_str().strip_prefix(raw_host) {
        Some("") => 80,
        Some(rest) => rest
            .strip_prefix(':')
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|&p| p != 0)
            .ok_or_else(|| bad("the port must be a number from 1 to 65535"))?,
        None => return Err(bad("cannot read the host and port")),
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let ip_text = match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    };
    let resolved: Uri = format!("http://{ip_text}:{port}{path}")
        .parse()
        .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
    let host = match host {
        Some(h) => HeaderValue::from_str(h)
            .ok()
            .filter(|_| !h.is_empty())
            .ok_or_else(|| ArgsError::BadHost(h.to_string()))?,
        None => HeaderValue::from_str(authority.as_str())
            .map_err(|_| bad("the host cannot be sent as a Host header"))?,
    };
    Ok(Target {
        url: url.to_string(),
        uri: resolved,
        host,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        args: LoadtestArgs,
    }

    fn parse(argv: &str) -> LoadtestArgs {
        let words = std::iter::once("loadtest").chain(argv.split_whitespace());
        match Cli::try_parse_from(words) {
            Ok(cli) => cli.args,
            Err(e) => panic!("{argv:?}: {e}"),
        }
    }

    fn plan(argv: &str) -> Result<Plan, ArgsError> {
        parse(argv).plan()
    }

    #[test]
    fn loopback_hosts_are_accepted_and_resolved() {
        for (url, uri, host) in [
            (
                "http://127.0.0.1:8080/",
                "http://127.0.0.1:8080/",
                "127.0.0.1:8080",
            ),
            (
                "http://127.1.2.3:81/x?y=1",
                "http://127.1.2.3:81/x?y=1",
                "127.1.2.3:81",
            ),
            (
                "http://localhost:9000/a",
                "http://127.0.0.1:9000/a",
                "localhost:9000",
            ),
            ("http://LOCALHOST/", "http://127.0.0.1:80/", "LOCALHOST"),
            ("http://[::1]:8080/", "http://[::1]:8080/", "[::1]:8080"),
            (
                "http://127.0.0.1:8080",
                "http://127.0.0.1:8080/",
                "127.0.0.1:8080",
            ),
        ] {
            let t = loopback_target("--url", url, None).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(t.uri.to_string(), uri, "{url}");
            assert_eq!(t.host, host, "{url}");
        }
        let t = loopback_target("--url", "http://127.0.0.1:8080/", Some("hello.localhost"))
            .expect("accepted");
        assert_eq!(t.host, "hello.localhost");
    }

    #[test]
    fn other_hosts_are_refused() {
        for url in [
            "http://10.0.0.1:8080/",
            "http://192.168.1.1/",
            "http://8.8.8.8/",
            "http://0.0.0.0:8080/",
            "http://[::]:8080/",
            "http://[::ffff:8.8.8.8]/",
            "http://example.com/",
            "http://hello.localhost:8080/",
            "http://localhost.example.com/",
            "http://128.0.0.1/",
        ] {
            let err = loopback_target("--url", url, None).expect_err(url);
            assert!(matches!(err, ArgsError::NotLoopback { .. }), "{url}: {err}");
            assert!(err.to_string().contains("not loopback"), "{err}");
        }
        for url in [
            "https://127.0.0.1/",
            "ftp://127.0.0.1/",
            "127.0.0.1:8080",
            "/path",
            "http://user:pw@127.0.0.1/",
            "http://127.0.0.1:99999/",
            "http://127.0.0.1:0/",
            "http://127.0.0.1:/",
        ] {
            let err = loopback_target("--url", url, None).expect_err(url);
            assert!(matches!(err, ArgsError::BadUrl { .. }), "{url}: {err}");
        }
        let err = loopback_target("--url", "http://127.0.0.1/", Some("bad\nhost"))
            .expect_err("newline in host");
        assert_eq!(err, ArgsError::BadHost("bad\nhost".into()));
    }

    #[test]
    fn patterns_are_built_from_flags() {
        let base = "--url http://127.0.0.1:1/ --duration 100";
        let p = |rest: &str| plan(&format!("{base} {rest}")).map(|p| p.pattern);
        assert_eq!(p("--from 5"), Ok(Pattern::Constant { rate: 5.0 }));
        assert_eq!(
            p("--pattern step --from 5 --to 50 --at 30"),
            Ok(Pattern::Step {
                from: 5.0,
                to: 50.0,
                at: 30.0
            })
        );
        assert_eq!(
            p("--pattern spike --from 5 --to 50 --at 30"),
            Ok(Pattern::Spike {
                from: 5.0,
                to: 50.0,
                at: 30.0,
                duration: 5.0
            })
        );
        assert_eq!(
            p("--pattern ramp --from 0 --to 50"),
            Ok(Pattern::Ramp {
                from: 0.0,
                to: 50.0,
                over: 100.0
            })
        );
        assert_eq!(
            p("--pattern sine --from 10 --to 50 --period 20"),
            Ok(Pattern::Sine {
                from: 10.0,
                to: 50.0,
                period: 20.0
            })
        );
    }

    #[test]
    fn bad_combinations_are_refused() {
        let base = "--url http://127.0.0.1:1/";
        let err = |rest: &str| plan(&format!("{base} {rest}")).expect_err(rest).to_string();
        assert_eq!(
            err("--pattern step --from 1 --to 2"),
            "--pattern step needs --at SECONDS"
        );
        assert_eq!(
            err("--pattern ramp --from 1"),
            "--pattern ramp needs --to RATE"
        );
        assert_eq!(
            err("--from 1 --to 2"),
            "--to has no effect with --pattern constant"
        );
        assert_eq!(
            err("--pattern sine --from 1 --to 2 --at 3"),
            "--at has no effect with --pattern sine"
        );
        assert!(err("--from 1 --duration 3601").contains("at most 3600"));
        assert!(err("--from 1 --duration 0").contains("positive"));
        assert!(err("--from=-1").contains("rate between"));
        assert!(err("--from 60000").contains("rate between"));
        assert!(err("--from NaN").contains("rate between"));
        assert!(err("--from 1 --timeout 0").contains("--timeout"));
        assert!(err("--from 1 --max-in-flight 0").contains("--max-in-flight"));
        assert!(err("--pattern step --from 1 --to 2 --at 60 --duration 60").contains("inside"));
        assert!(err("--from 1 --metrics http://10.1.1.1/metrics").contains("--metrics"));
        assert!(err("--from 50000 --duration 3600").contains("requests"));
        let m = "--metrics http://127.0.0.1:2/metrics";
        assert!(err(&format!("--from 1 {m} --cooldown=-1")).contains("--cooldown"));
        assert!(err(&format!("--from 1 {m} --cooldown 3601")).contains("at most 3600"));
    }

    #[test]
    fn cooldown_defaults_to_none_and_adds_no_requests() {
        let base = "--url http://127.0.0.1:1/ --from 10 --duration 5 --metrics http://127.0.0.1:2/";
        let without = plan(base).expect("accepted");
        assert_eq!(without.cooldown_s, 0.0);
        let with = plan(&format!("{base} --cooldown 30")).expect("accepted");
        assert_eq!((with.cooldown_s, with.scheduled), (30.0, without.scheduled));
    }

    #[test]
    fn app_requires_metrics() {
        let argv = [
            "loadtest",
            "--url",
            "http://127.0.0.1:1/",
            "--from",
            "1",
            "--app",
            "x",
        ];
        assert!(Cli::try_parse_from(argv).is_err());
    }

    #[test]
    fn defaults() {
        let p = plan("--url http://127.0.0.1:1/ --from 2").expect("valid");
        assert_eq!(p.duration_s, 60.0);
        assert_eq!(p.timeout, Duration::from_secs(10));
        assert_eq!(p.max_in_flight, 2000);
        assert_eq!(p.csv, PathBuf::from("loadtest.csv"));
        assert_eq!(p.png, PathBuf::from("loadtest.png"));
        assert_eq!(p.scheduled, 120);
        assert!(p.metrics.is_none());
    }
}
